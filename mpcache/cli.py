"""memcached's command line, and the daemon's main().

One table (OPTIONS) drives parsing, the -h text and the getopt strings, the
way memcached's own option table does: adding a flag is one row plus, if it
takes effect, one branch in apply_option().  Parsing follows getopt_long:
`-p 11211`, `-p11211`, `--port=11211`, `--port 11211`, `-vvv`, unique
prefixes of long names.

Exit codes: 0 after a normal stop (SIGTERM, SIGINT, "shutdown"), 1 when a
channel's event loop fails (memcached's EXIT_FAILURE), 64 (EX_USAGE) for a
flag or value mpcache does not take, and memcached's own codes for the
settings it refuses (see mpcache/config.py).
"""

import getopt
import os
import re
import select
import signal
import socket
import sys
from dataclasses import dataclass

from . import __version__
from .config import (EX_USAGE, MEMCACHED_EXTENDED_KEYS, MB, ConfigError, Settings,
                     default_threads, parse_size)
from .log import logger, setup as setup_logging

MEMCACHED_VERSION = "1.6.18"
VERSION_LINE = f"mpcache {__version__} (memcached {MEMCACHED_VERSION} compatible)"


@dataclass(frozen=True)
class Option:
    short: str        # one letter, or "" for long-only flags
    long: str         # long name, or "" for short-only flags
    arg: str          # "" for a switch, else the metavariable shown by -h
    help: str         # -h text; continuation lines are indented by -h


OPTIONS = [
    Option("p", "port", "num", "TCP port to listen on (default: 11211; -1: any free port,\n"
           "announced in $MEMCACHED_PORT_FILENAME; 0: no TCP)"),
    Option("U", "udp-port", "num", "UDP port to listen on (default: 0, off); without -p\n"
           "the TCP port too, as memcached"),
    Option("s", "unix-socket", "file", "UNIX socket to listen on (disables network support)"),
    Option("a", "unix-mask", "mask", "access mask for UNIX socket, in octal (default: 700)"),
    Option("A", "enable-shutdown", "", "enable ascii \"shutdown\" command"),
    Option("l", "listen", "addr", "interface to listen on (default: 127.0.0.1; memcached's\n"
           "default is INADDR_ANY). Repeatable or comma separated;\n"
           "<addr>:<port> and [<ipv6>]:<port> set the port per interface;\n"
           "with -Z, notls:<addr>:<port> is a plaintext listener"),
    Option("d", "daemon", "", "run as a daemon"),
    Option("r", "enable-coredumps", "", "maximize core file limit"),
    Option("u", "user", "user", "assume identity of <username> (only when run as root;\n"
           "required when run as root, as memcached: -u root keeps root)"),
    Option("m", "memory-limit", "num", "item memory in megabytes (default: 64)"),
    Option("M", "disable-evictions", "", "return error on memory exhausted instead of evicting"),
    Option("c", "conn-limit", "num", "max simultaneous connections (default: 1024)"),
    Option("k", "lock-memory", "", "lock down all paged memory (accepted, ignored)"),
    Option("v", "verbose", "", "verbose (print errors/warnings while in event loop)"),
    Option("", "", "", "-vv                       very verbose (also print client commands/responses)"),
    Option("", "", "", "-vvv                      extremely verbose (internal state transitions)"),
    Option("h", "help", "", "print this help and exit"),
    Option("i", "license", "", "print the license and exit"),
    Option("V", "version", "", "print version and exit"),
    Option("P", "pidfile", "file", "save PID in <file> (removed at exit)"),
    Option("f", "slab-growth-factor", "num", "chunk size growth factor (default: 1.08)"),
    Option("n", "slab-min-size", "bytes", "min space used for key+value+flags (default: 48)"),
    Option("L", "enable-largepages", "", "try to use large memory pages (accepted, ignored)"),
    Option("D", "", "char", "prefix delimiter for per-prefix stats (stats detail), turns them on"),
    Option("t", "threads", "num", "number of channels (threads) to use (default: half the\n"
           "CPUs this process may run on, at least 1; here {cpus})"),
    Option("R", "max-reqs-per-event", "num", "maximum number of requests per event, limits the\n"
           "requests processed per connection to prevent\nstarvation (default: 20)"),
    Option("C", "disable-cas", "", "disable use of CAS"),
    Option("b", "listen-backlog", "num", "set the backlog queue limit (default: 1024)"),
    Option("B", "protocol", "name", "protocol - one of ascii, binary, or auto (default:\n"
           "auto-negotiate)"),
    Option("I", "max-item-size", "num", "adjusts max item size\n(default: 1m, min: 1k, max: 1024m)"),
    Option("S", "enable-sasl", "", "turn on Sasl authentication"),
    Option("F", "disable-flush-all", "", "disable flush_all command"),
    Option("X", "disable-dumping", "", "disable stats cachedump and lru_crawler metadump"),
    Option("W", "disable-watch", "", "disable watch commands (live logging)"),
    Option("Y", "auth-file", "file", "enable ASCII protocol authentication. format:\n"
           "user:pass\\nuser2:pass2\\n (read at start and on SIGHUP)"),
    Option("e", "memory-file", "file", "mmap a file for item memory (accepted, ignored:\n"
           "the cache is not restartable)"),
    Option("Z", "enable-ssl", "", "enable TLS/SSL (on every TCP listener but notls: ones;\n"
           "refused by a build without OpenSSL's headers)"),
    Option("o", "extended", "opts", "comma separated list of extended options\n"
           "   - idle_timeout:        timeout for idle connections. (default: 0, no timeout)\n"
           "   - maxconns_fast:       immediately close new connections after limit\n"
           "                          (default: enabled; no_maxconns_fast disables)\n"
           "   - relaxed_privileges:  accepted (mpcache installs no syscall filter)\n"
           "   - ssl_chain_cert:      certificate chain file in PEM format\n"
           "   - ssl_key:             private key, if not part of the -ssl_chain_cert\n"
           "   - ssl_keyformat:       private key format (PEM, DER or ENGINE) (default: PEM)\n"
           "   - ssl_verify_mode:     peer certificate verification mode, default is 0(None).\n"
           "                          valid values are 0(None), 1(Request), 2(Require)\n"
           "                          or 3(Once)\n"
           "   - ssl_ciphers:         specify cipher list to be used\n"
           "   - ssl_ca_cert:         PEM format file of acceptable client CA's\n"
           "   - ssl_wbuf_size:       size in kilobytes of per-connection SSL output buffer\n"
           "                          (default: 16)\n"
           "   - ssl_session_cache:   enable server-side SSL session cache, to support session\n"
           "                          resumption\n"
           "   - ssl_kernel_tls:      enable kernel TLS offload (accepted; records stay in\n"
           "                          user space, see README)\n"
           "   - ssl_min_version:     minimum protocol version to accept (default: tlsv1.2)\n"
           "                          valid values are 0(tlsv1.0), 1(tlsv1.1), 2(tlsv1.2), or 3(tlsv1.3).\n"
           "   - memcached's other options (hashpower, slab_*, lru_*, ext_*, ...)\n"
           "                          are accepted with a warning and ignored"),
    Option("N", "napi-ids", "num", "number of napi ids (accepted, ignored)"),
    Option("", "io-engine", "name", "I/O engine: auto, uring or epoll (default: auto, or\n"
           "$MPCACHE_IO_ENGINE: io_uring when the kernel allows it)"),
    Option("", "metrics-listen", "addr:port", "serve Prometheus metrics on http://<addr:port>/metrics\n"
           "(default: off; a bare port means 127.0.0.1:<port>)"),
    Option("", "pin-channels", "", "pin channel i to the i-th CPU this process may run on\n"
           "(for cores dedicated to the cache; default: the\nscheduler places the channels)"),
]

_SHORTOPTS = "".join(o.short + (":" if o.arg else "") for o in OPTIONS if o.short)
_LONGOPTS = [o.long + ("=" if o.arg else "") for o in OPTIONS if o.long]
_BY_SHORT = {"-" + o.short: o for o in OPTIONS if o.short}
_BY_LONG = {"--" + o.long: o for o in OPTIONS if o.long}

HELP_COLUMN = 26   # memcached's -h aligns descriptions at this column


def help_text():
    lines = [VERSION_LINE]
    for o in OPTIONS:
        text = o.help.replace("{cpus}", str(default_threads())).split("\n")
        if not o.short and not o.long:
            lines.extend(text)
            continue
        if o.short and o.long:
            head = f"-{o.short}, --{o.long}"
            if o.arg:
                head += f"=<{o.arg}>"
        elif o.short:
            head = f"-{o.short}" + (f" <{o.arg}>" if o.arg else "")
        else:
            head = f"    --{o.long}" + (f"=<{o.arg}>" if o.arg else "")
        sep = " " * max(1, HELP_COLUMN - len(head))
        lines.append(head + sep + text[0])
        for more in text[1:]:
            lines.append(more if more.startswith(" ") else " " * HELP_COLUMN + more)
    return "\n".join(lines) + "\n"


LICENSE_TEXT = f"""{VERSION_LINE}

mpcache is distributed under the BSD 3-Clause License.  It reimplements the
memcached protocol and command line; memcached is Copyright (c) 2003, Danga
Interactive, Inc., also under a BSD license.
"""


class UsageError(ConfigError):
    def __init__(self, message):
        super().__init__(message, EX_USAGE)


@dataclass
class Command:
    """What the command line asks for: an action and the settings."""
    action: str            # "serve", "help", "version", "license"
    settings: Settings
    warnings: list


def _int(flag, value, message=None):
    try:
        return int(value.strip(), 10)
    except ValueError:
        raise UsageError(message or f"Invalid number for {flag}: \"{value}\"") from None


def _extended(s, warnings, text):
    for sub in text.split(","):
        if not sub:
            continue
        key, eq, value = sub.partition("=")
        if key == "idle_timeout":
            if not eq or not value.strip().isdigit():
                raise ConfigError("Missing numeric argument for idle_timeout")
            s.idle_timeout = int(value)
        elif key == "relaxed_privileges":
            pass
        elif key == "maxconns_fast":
            s.maxconns_fast = True
        elif key == "no_maxconns_fast":
            s.maxconns_fast = False
        elif key in _SSL_OPTIONS:
            _ssl_option(s, key, value if eq else None)
        elif key in MEMCACHED_EXTENDED_KEYS:
            warnings.append(f"WARNING: -o {key} is a memcached tuning option mpcache does not "
                            "use; ignored")
        else:
            raise ConfigError(f"Illegal suboption \"{sub}\"")


# memcached's safe_strtol / safe_strtoul: optional blanks and sign, digits,
# optional trailing blanks; an unsigned value may not be negative.
_C_LONG = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*\Z", re.ASCII)


def _c_number(key, value, unsigned=False):
    if not _C_LONG.match(value) or (unsigned and "-" in value):
        raise ConfigError(f"could not parse argument to {key}")
    return int(value.strip())


def _ssl_option(s, key, value):
    """-o ssl_*, parsed as memcached does, with its messages (exit 1).
    value is None when the option had no "=" (memcached's NULL)."""
    if key in ("ssl_session_cache", "ssl_kernel_tls"):
        setattr(s, key, True)
        return
    if value is None:
        raise ConfigError(f"Missing {key} argument")
    if key in ("ssl_chain_cert", "ssl_key", "ssl_ciphers", "ssl_ca_cert"):
        setattr(s, key, value)
    elif key in ("ssl_verify_mode", "ssl_min_version"):
        n = _c_number(key, value)
        if n not in range(4):
            raise ConfigError(f"Invalid {key}. Use help to see valid options.")
        setattr(s, key, n)
    elif key == "ssl_keyformat":
        s.ssl_keyformat = _c_number(key, value)
    elif key == "ssl_wbuf_size":
        s.ssl_wbuf_size = _c_number(key, value, unsigned=True) * 1024


_SSL_OPTIONS = frozenset("""ssl_chain_cert ssl_key ssl_keyformat ssl_verify_mode ssl_ciphers
    ssl_ca_cert ssl_wbuf_size ssl_session_cache ssl_kernel_tls ssl_min_version""".split())


def apply_option(s, warnings, opt, value, listen_given):
    """One flag into the settings.  Returns True if it was -l (so the first
    -l replaces the default address)."""
    name = opt.short or opt.long
    if name == "p":
        s.port = _int("-p", value, f"ERROR: Invalid port number {value}.")
    elif name == "U":
        s.udp_port = _int("-U", value, f"ERROR: Invalid UDP port number {value}.")
    elif name == "s":
        s.unix_socket = value
    elif name == "a":
        try:
            s.unix_mask = int(value, 8)
        except ValueError:
            raise UsageError(f"Invalid unix socket mask \"{value}\" (octal, e.g. 700)") from None
    elif name == "A":
        s.enable_shutdown = True
    elif name == "l":
        entries = [e.strip() for e in value.split(",") if e.strip()]
        s.listen = (s.listen if listen_given else []) + entries
        return True
    elif name == "d":
        s.daemonize = True
    elif name == "r":
        s.enable_coredumps = True
    elif name == "u":
        s.user = value
    elif name == "m":
        v = value.strip()
        s.memory_mb = _int("-m", v[:-1] if v[-1:] in ("m", "M") else v,
                           f"Invalid memory limit \"{value}\": a number of megabytes")
    elif name == "M":
        s.evict_to_free = False
    elif name == "c":
        s.max_conns = _int("-c", value)
    elif name == "v":
        s.verbose += 1
    elif name == "P":
        s.pidfile = value
    elif name == "f":
        try:
            s.factor = float(value)
        except ValueError:
            raise UsageError(f"Invalid number for -f: \"{value}\"") from None
    elif name == "n":
        s.chunk_size = _int("-n", value)
    elif name == "t":
        s.threads = _int("-t", value)
    elif name == "R":
        s.reqs_per_event = _int("-R", value)
    elif name == "C":
        s.use_cas = False
    elif name == "b":
        s.backlog = _int("-b", value)
    elif name == "B":
        if value not in ("ascii", "auto", "binary"):
            raise UsageError(f"Invalid value for binding protocol: {value}\n"
                             " -- should be one of auto, binary, or ascii")
        s.protocol = value
    elif name == "I":
        s.max_item_size = parse_size(value)
    elif name == "S":
        s.sasl = True
    elif name == "Z":
        # as a memcached built without TLS, at the flag itself
        try:
            from ._engine import tls_built
        except ImportError:   # no engine at all: it says so when it starts
            tls_built = lambda: True   # noqa: E731
        if not tls_built():
            raise UsageError("This server is not built with TLS support.")
        s.ssl_enabled = True
    elif name == "Y":
        s.auth_file = value
    elif name == "F":
        s.flush_enabled = False
    elif name == "X":
        s.dump_enabled = False
    elif name == "W":
        s.watch_enabled = False
    elif name == "D":
        if not value:
            raise ConfigError("No delimiter specified")
        s.prefix_delimiter = value
        s.detail_enabled = True
    elif name in ("k", "L", "e", "N"):
        flag = f"-{opt.short}" + (f" {value}" if opt.arg else "")
        warnings.append(f"WARNING: {flag} is not supported by mpcache; ignored")
    elif name == "o":
        _extended(s, warnings, value)
    elif name == "io-engine":
        s.io_engine = value
    elif name == "metrics-listen":
        s.metrics_listen = value
    elif name == "pin-channels":
        s.pin_threads = True
    return False


def parse_args(argv):
    """argv (without the program name) -> Command.  Raises ConfigError."""
    try:
        opts, rest = getopt.gnu_getopt(argv, _SHORTOPTS, _LONGOPTS)
    except getopt.GetoptError as e:
        raise UsageError(_getopt_message(e)) from None
    if rest:
        raise UsageError(f"mpcache: unexpected argument '{rest[0]}'")
    s = Settings(io_engine=os.environ.get("MPCACHE_IO_ENGINE", "auto"))
    warnings = []
    action = "serve"
    listen_given = False
    protocol = None
    port_given = False
    for flag, value in opts:
        opt = _BY_SHORT.get(flag) or _BY_LONG[flag]
        name = opt.short or opt.long
        port_given = port_given or name == "p"
        if name == "B":
            protocol = value
        if name == "h":
            action = "help"
        elif name == "V":
            action = "version"
        elif name == "i":
            action = "license"
        elif apply_option(s, warnings, opt, value, listen_given):
            listen_given = True
    # As memcached: -S alone binds the binary protocol (and -B ascii or auto
    # beside it is refused, in validate); the users are read from the file
    # $MEMCACHED_SASL_PWDB names
    if s.sasl:
        if protocol is None:
            s.protocol = "binary"
        s.sasl_pwdb = os.environ.get("MEMCACHED_SASL_PWDB")
    # As memcached: -U without -p moves the TCP port to the UDP one.
    if s.udp_port and not port_given:
        s.port = s.udp_port
    # As memcached: the binary protocol has no ASCII authentication, and
    # "auto" could negotiate it.
    if s.auth_file is not None and protocol not in (None, "ascii"):
        raise UsageError("ERROR: You cannot allow the BINARY protocol while using ascii "
                         "authentication tokens.")
    return Command(action, s, warnings)


def _getopt_message(e):
    opt = e.opt or ""
    long = len(opt) > 1
    shown = f"--{opt}" if long else opt
    if "not recognized" in e.msg or "not a unique prefix" in e.msg:
        if "not a unique prefix" in e.msg:
            return f"mpcache: option '{shown}' is ambiguous"
        return f"mpcache: unrecognized option '{shown}'" if long else \
            f"mpcache: invalid option -- '{opt}'"
    if "requires argument" in e.msg:
        return f"mpcache: option '{shown}' requires an argument" if long else \
            f"mpcache: option requires an argument -- '{opt}'"
    if "must not have an argument" in e.msg:
        return f"mpcache: option '{shown}' doesn't allow an argument"
    return f"mpcache: {e.msg}"


def _fail(err):
    msg = err.message
    if err.code == EX_USAGE and msg.startswith("mpcache: "):
        msg += "\nTry 'mpcache -h' for the list of flags."
    print(msg, file=sys.stderr, flush=True)
    return err.code


def main(argv=None):
    """The `mpcache` console script and `python -m mpcache`."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except ConfigError as e:
        return _fail(e)
    except KeyboardInterrupt:
        return 0


def _main(argv):
    from . import daemon
    from .server import Server

    cmd = parse_args(argv)
    if cmd.action == "help":
        sys.stdout.write(help_text())
        return 0
    if cmd.action == "version":
        print(VERSION_LINE)
        return 0
    if cmd.action == "license":
        sys.stdout.write(LICENSE_TEXT)
        return 0
    s = cmd.settings
    setup_logging(s.verbose)
    # Usage and value errors first, before anything touches the system.
    srv = Server(s)
    daemon.check_root(s.user)
    pw = daemon.lookup_user(s.user) if s.user else None
    for w in cmd.warnings:
        logger.warning(w)
    if s.enable_coredumps:
        daemon.enable_coredumps()

    srv.bind()
    port_file = os.environ.get("MEMCACHED_PORT_FILENAME")
    if port_file and s.unix_socket is None:
        daemon.write_port_file(port_file, srv.listen_report())

    detached = daemon.Daemon()
    if s.daemonize:
        detached.detach()
    # Stop signals are caught from here on, so even one that arrives during
    # start-up leads to a clean exit (socket file and pid file removed).
    wake_r, restore_signals = _catch_stop_signals(reload=s.auth_file is not None)
    try:
        if s.pidfile:
            daemon.write_pid_file(s.pidfile)
        if pw is not None:
            if pw.pw_uid != 0 and os.geteuid() == 0:
                srv.chown_unix_socket(pw.pw_uid, pw.pw_gid)
            daemon.drop_privileges(pw)
            _warn_unix_socket_left_behind(srv)
        srv.start()
    except ConfigError as e:
        srv.stop()
        restore_signals()
        code = _fail(e)
        detached.failed(code)
        return code
    except BaseException:
        srv.stop()
        restore_signals()
        detached.failed(1)
        raise
    detached.ready()
    try:
        return _serve(srv, wake_r)
    finally:
        srv.stop()
        restore_signals()
        if s.pidfile:
            daemon.remove_pid_file(s.pidfile)


def _warn_unix_socket_left_behind(srv):
    # Said at start too, while -d still shows it: at exit stderr may be
    # /dev/null.
    if srv.unix_socket is None:
        return
    from .server import unix_socket_dir_problem
    problem = unix_socket_dir_problem(srv.unix_socket)
    if problem:
        logger.warning("WARNING: the UNIX socket %s will be left behind at exit: %s",
                       srv.unix_socket, problem)


# As memcached 1.6: SIGTERM and SIGINT stop, SIGUSR1 stops saying
# "Gracefully stopping" (mpcache has one way to stop), SIGHUP reloads the
# -Y password file and is otherwise ignored.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _catch_stop_signals(reload=False):
    """SIGTERM/SIGINT -> a byte on a socket the main loop selects on.
    Returns (read end, restore function)."""
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
    # A Python-level handler, so the C handler writes the signal number to
    # the wakeup socket and the default action (death) is not taken.
    old = {sig: signal.signal(sig, lambda *_: None) for sig in STOP_SIGNALS}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP,
                                       (lambda *_: None) if reload else signal.SIG_IGN)

    def restore():
        if wake_w.fileno() < 0:
            return
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        wake_r.close()
        wake_w.close()
    return wake_r, restore


def _serve(srv, wake_r):
    """The main thread's only job while channels serve: wait for a stop
    signal, the "shutdown" command, or a channel that died, and reload the
    -Y password file on SIGHUP."""
    stop_bytes = {int(sig) for sig in STOP_SIGNALS}
    while True:
        ready, _, _ = select.select([wake_r, srv.control_fd, srv.failure_fd], [], [])
        if wake_r in ready:
            try:
                sigs = wake_r.recv(64)
            except BlockingIOError:
                sigs = b""
            if int(signal.SIGHUP) in sigs:
                srv.reload_auth()
            if stop_bytes.intersection(sigs):
                if int(signal.SIGUSR1) in sigs:
                    logger.warning("Gracefully stopping")
                logger.info("Exiting normally")
                return 0
        if srv.control_fd in ready:
            try:
                value = int.from_bytes(os.read(srv.control_fd, 8), sys.byteorder)
            except BlockingIOError:
                continue
            if value == 2:     # "shutdown graceful" (mp_engine_request_shutdown)
                logger.warning("Gracefully stopping")
            logger.info("Exiting normally")
            return 0
        if srv.failure_fd in ready:
            logger.error("Exiting on error")
            return 1
