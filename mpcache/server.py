"""The server's life cycle: listening sockets, channel threads, stop.

Python creates every listening socket, the engine serves them::

      -l 127.0.0.1:11211            -l [::1]:11211           -s /run/mc.sock
         |   SO_REUSEPORT group        |   SO_REUSEPORT group       | one socket
    +----+-----+------------+     +----+-----+------------+        |
    | fd ch0   | fd ch1 ... |     | fd ch0   | fd ch1 ... |        |
    +----+-----+-----+------+     +----+-----+-----+------+        |
         |           |                 |           |               |
    channel 0    channel 1 ...  <------+-----------+---------------+ (every channel)
    (thread, nogil loop, its own epoll/io_uring, connection table)

Each channel gets its own socket on every TCP address, all bound to the same
port with SO_REUSEPORT, so the kernel spreads new connections over the
channels without a shared accept queue (MegaPipe's partitioned listening
socket).  The Unix socket, if any, is one socket watched by every channel.

`Server` is both the daemon's core (mpcache/cli.py drives it) and the
embedded API::

    with mpcache.Server(port=0, threads=1, memory_mb=64) as srv:
        client = pymemcache.Client(srv.address)

Several Servers may run in one process; they share nothing.
"""

import atexit
import errno
import os
import pwd
import resource
import select
import socket
import stat
import threading
import weakref

from .config import (EX_OSERR, EX_USAGE, LISTENERS_MAX, MB, NOTLS_PREFIX, ConfigError, Settings,
                     parse_size)
from .log import logger

# How long stop() waits for a channel thread to return before giving up on
# it; a channel wakes on its stop eventfd at once, so this is generous.
JOIN_TIMEOUT = 10.0


class ListenError(ConfigError):
    """A listening socket could not be created (memcached exits EX_OSERR)."""

    def __init__(self, message):
        super().__init__(message, EX_OSERR)


def parse_listen(entry, default_port):
    """"host", "host:port", "[v6]:port" or a bare IPv6 address (as memcached's
    -l) -> (host, port)."""
    e = entry.strip()
    if e.startswith("["):
        host, sep, rest = e[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ListenError(f"Invalid IPV6 address: \"{entry}\"")
        port = rest[1:] if rest else None
    elif e.count(":") == 1:
        host, port = e.split(":")
    else:
        host, port = e, None
    if port is None:
        return host, default_port
    try:
        value = int(port, 10)
    except ValueError:
        value = None
    if value is None or not -1 <= value <= 65535:
        raise ListenError(f"Invalid port number: \"{port}\"")
    return host, value


def _family_name(family):
    return "INET6" if family == socket.AF_INET6 else "INET"


def parse_stats(text):
    """b"STAT name value\\r\\n...END\\r\\n" -> {name: value}; values that are
    integers become int, the rest stay str."""
    out = {}
    for line in text.decode("utf-8", "replace").split("\r\n"):
        if not line.startswith("STAT "):
            continue
        _, name, value = (line.split(" ", 2) + [""])[:3]
        try:
            out[name] = int(value)
        except ValueError:
            out[name] = value
    return out


_running = weakref.WeakSet()


@atexit.register
def _stop_leftovers():
    # An embedded server the host forgot to stop must not keep the
    # interpreter from exiting with channel threads inside C.
    for srv in list(_running):
        try:
            srv.stop()
        except Exception:
            pass


class Server:
    """A memcached-compatible server on background channel threads.

    Keyword arguments are the fields of mpcache.config.Settings, with the
    embedded conventions: port=0 picks a free port (None: no TCP), threads
    defaults to 1, host (or listen) is the address or list of addresses,
    max_item_size may be "1m"/"512k" or bytes."""

    def __init__(self, settings=None, **kw):
        if settings is None:
            settings = self._embedded_settings(**kw)
        elif kw:
            raise TypeError("pass either a Settings or keyword arguments, not both")
        self.settings = settings
        self.warnings = settings.validate()
        self._tcp = []            # (sock, channel, family, sockaddr, tls)
        self._unix = None         # (sock, path, inode)
        self._udp = []            # (sock, channel): -U, a socket per channel and address
        self._engine = None
        self._tls = None          # -Z's context, made by bind() (_engine.TLSContext)
        self._threads = []
        self._stopping = False
        self._state = "new"
        self._lock = threading.Lock()
        self._fail_r = self._fail_w = None   # made by start()
        self._metrics = None      # metrics.MetricsServer with --metrics-listen
        self.failures = []        # exceptions raised by channel loops
        self.port = None
        self.addresses = []       # [(host, port)], one per TCP address

    @staticmethod
    def _embedded_settings(port=0, host=None, listen=None, threads=1, memory_mb=64,
                           max_item_size=MB, **kw):
        s = Settings(threads=threads, memory_mb=memory_mb, **kw)
        s.max_item_size = parse_size(max_item_size) if isinstance(max_item_size, str) else max_item_size
        # Python's convention: port 0 is "any free port"; memcached's -1.
        s.port = 0 if port is None else (-1 if port == 0 else port)
        addrs = listen if listen is not None else host
        if addrs is not None:
            s.listen = [addrs] if isinstance(addrs, str) else list(addrs)
        return s

    # -- sockets ---------------------------------------------------------

    def bind(self):
        """Creates every listening socket (before privileges are dropped or
        the process daemonizes).  Raises ListenError."""
        if self._state != "new":
            return self
        try:
            if self.settings.unix_socket is not None:
                self._bind_unix()
            elif self.settings.tcp_enabled():
                self._bind_tcp()
            if self.settings.unix_socket is None and self.settings.udp_port:
                self._bind_udp()
        except BaseException:
            self._close_sockets()
            raise
        ntcp = len(self.addresses)
        if ntcp + (self._unix is not None) > LISTENERS_MAX:
            self._close_sockets()
            raise ListenError(f"Too many listening addresses ({ntcp}); at most {LISTENERS_MAX}")
        if self.settings.ssl_enabled:
            # -Z's certificate and key are read now, before privileges are
            # dropped, as memcached reads them as root (refresh_certs later
            # reads them as the user we run as, in both)
            from ._engine import TLSContext
            try:
                self._tls = TLSContext(self.settings.engine_settings())
            except ValueError as e:
                self._close_sockets()
                raise ConfigError(str(e), EX_USAGE) from None
        if self.settings.metrics_listen is not None:
            from .metrics import MetricsServer
            try:
                self._metrics = MetricsServer(self, self.settings.metrics_listen).bind()
            except BaseException:
                self._close_sockets()
                raise
        self._state = "bound"
        return self

    def _bind_tcp(self):
        s = self.settings
        chosen = None          # the ephemeral port, shared by every address
        for entry in s.listen:
            if not entry.strip():
                continue
            tls = s.ssl_enabled
            spec = entry
            if entry.startswith(NOTLS_PREFIX):
                if not s.ssl_enabled:
                    # memcached's words, then its vperror line (errno 0)
                    raise ListenError("'notls' option is valid only when SSL is enabled\n"
                                      "failed to listen on one of interface(s) "
                                      f"{','.join(s.listen)}: Success")
                tls = False
                spec = entry[len(NOTLS_PREFIX):]
            host, port = parse_listen(spec, s.port)
            if port in (-1, 0):
                port = chosen or 0
            gai_host = None if host in ("", "*") else host
            try:
                infos = socket.getaddrinfo(gai_host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                           0, socket.AI_PASSIVE)
            except socket.gaierror as e:
                raise ListenError(f"getaddrinfo(): {e.strerror}\n"
                                  f"failed to listen on one of interface(s) {entry}") from None
            seen = set()
            bound = 0
            for family, socktype, proto, _, sockaddr in infos:
                if (family, sockaddr) in seen or family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                seen.add((family, sockaddr))
                try:
                    actual = self._bind_partitions(family, socktype, proto, sockaddr, entry, tls)
                except OSError as e:
                    if e.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                        continue   # e.g. no IPv6 in this container: as memcached
                    raise
                bound += 1
                if chosen is None and port == 0:
                    chosen = actual
                if port == 0:
                    port = actual
            if not bound:
                raise ListenError(f"failed to listen on one of interface(s) {entry}: "
                                  "no usable address")
        if self._tcp:
            self.port = self.addresses[0][1]

    def _bind_udp(self):
        """-U: on every -l address, a UDP socket per channel on the UDP port
        (SO_REUSEPORT: the kernel spreads the clients over the channels)."""
        s = self.settings
        for entry in s.listen:
            if not entry.strip():
                continue
            spec = entry[len(NOTLS_PREFIX):] if entry.startswith(NOTLS_PREFIX) else entry
            host, _ = parse_listen(spec, s.udp_port)
            gai_host = None if host in ("", "*") else host
            try:
                infos = socket.getaddrinfo(gai_host, s.udp_port, socket.AF_UNSPEC,
                                           socket.SOCK_DGRAM, 0, socket.AI_PASSIVE)
            except socket.gaierror as e:
                raise ListenError(f"getaddrinfo(): {e.strerror}\n"
                                  f"failed to listen on one of interface(s) {entry}") from None
            seen = set()
            for family, socktype, proto, _, sockaddr in infos:
                if (family, sockaddr) in seen or family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                seen.add((family, sockaddr))
                try:
                    self._bind_partitions(family, socktype, proto, sockaddr, entry, udp=True)
                except OSError as e:
                    if e.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                        continue
                    raise

    def _bind_partitions(self, family, socktype, proto, sockaddr, entry, tls=False, udp=False):
        """One socket per channel on sockaddr, all on the same port."""
        host, port = sockaddr[0], sockaddr[1]

        def fail(e, what):
            raise ListenError(f"{what}(): {e.strerror}\n"
                              f"failed to listen on one of interface(s) {entry}: "
                              f"{_fmt_addr(host, port)}") from None

        def bound(addr, reuseport):
            sock = socket.socket(family, socktype, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuseport:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(addr)
                except OSError as e:
                    fail(e, "bind")
            except BaseException:
                sock.close()
                raise
            return sock

        # A probe without SO_REUSEPORT first: it fails if anything (a stale
        # mpcache included) already listens there, where a SO_REUSEPORT bind
        # would silently share the port with it; with port 0 it picks the port.
        probe = bound(sockaddr, reuseport=False)
        try:
            port = probe.getsockname()[1]
        finally:
            probe.close()
        addr = (host, port) + tuple(sockaddr[2:])
        for ch in range(self.settings.threads):
            sock = bound(addr, reuseport=True)
            if udp:
                sock.setblocking(False)
                self._udp.append((sock, ch))
                continue
            try:
                try:
                    sock.listen(self.settings.backlog)
                except OSError as e:
                    fail(e, "listen")
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            self._tcp.append((sock, ch, family, addr, tls))
        self.addresses.append((host, port))
        return port

    def _bind_unix(self):
        s = self.settings
        path = s.unix_socket
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ListenError(f"failed to listen on UNIX socket: {path}: {e.strerror}") from None
        else:
            if stat.S_ISSOCK(st.st_mode):
                # memcached unlinks any old socket; check nobody serves it first.
                if _unix_socket_alive(path):
                    raise ListenError(f"failed to listen on UNIX socket: {path}: "
                                      "Address already in use")
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The mask applies at creation, so the socket is never reachable
            # with looser permissions; umask is process-wide but only for the
            # length of one bind.
            old = os.umask(~s.unix_mask & 0o777)
            try:
                sock.bind(path)
            except OSError as e:
                raise ListenError(f"bind(): {e.strerror}\n"
                                  f"failed to listen on UNIX socket: {path}") from None
            finally:
                os.umask(old)
            os.chmod(path, s.unix_mask)
            sock.listen(s.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._unix = (sock, path, os.lstat(path).st_ino)

    def chown_unix_socket(self, uid, gid):
        """Gives the socket file to the user we switch to, so the server can
        still remove it on exit (in a sticky /tmp only the owner may)."""
        if self._unix is not None:
            os.chown(self._unix[1], uid, gid)

    def _close_sockets(self):
        self._tls = None
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        for sock, *_ in self._tcp:
            sock.close()
        self._tcp = []
        for sock, _ in self._udp:
            sock.close()
        self._udp = []
        if self._unix is not None:
            sock, path, ino = self._unix
            sock.close()
            _remove_unix_socket(path, ino)
            self._unix = None

    def listen_report(self):
        """[(transport, family name, port)] per TCP address, then per UDP
        address, for the port file."""
        seen = []
        for sock, ch, family, addr, _ in self._tcp:
            if ch == 0:
                seen.append(("TCP", _family_name(family), addr[1]))
        for sock, ch in self._udp:
            if ch == 0:
                seen.append(("UDP", _family_name(sock.family), sock.getsockname()[1]))
        return seen

    # -- channels --------------------------------------------------------

    def start(self):
        """Binds (if not done), creates the engine and starts one thread per
        channel.  Returns self."""
        with self._lock:
            if self._state == "running":
                return self
            if self._state == "stopped":
                raise RuntimeError("a stopped Server cannot be restarted")
            self.bind()
            _raise_fd_limit(self.settings.max_conns, self.settings.backlog)
            from ._engine import Engine
            try:
                self._engine = Engine(self.settings.engine_settings(bound_port=self.port or 0),
                                      tls=self._tls)
            except ValueError as e:
                self._close_sockets()
                self._state = "stopped"
                raise ConfigError(str(e)) from None
            try:
                for sock, ch, family, addr, tls in self._tcp:
                    self._engine.add_listener(ch, sock.fileno(), False, tls)
                for sock, ch in self._udp:
                    self._engine.add_udp(ch, sock.fileno())
                if self._unix is not None:
                    for ch in range(self._engine.nchannels):
                        self._engine.add_listener(ch, self._unix[0].fileno(), True)
            except BaseException:
                self._engine.close()
                self._engine = None
                self._close_sockets()
                self._state = "stopped"
                raise
            self._fail_r, self._fail_w = os.pipe()
            os.set_blocking(self._fail_r, False)
            cpus = sorted(os.sched_getaffinity(0)) if self.settings.pin_threads else None
            placed = [threading.Event() for _ in range(self._engine.nchannels)]
            for i in range(self._engine.nchannels):
                t = threading.Thread(target=self._run_channel, args=(i, cpus, placed[i]),
                                     name=f"mpcache-channel-{i}", daemon=True)
                self._threads.append(t)
                t.start()
            # Placement is part of start-up: once start() returns, every
            # channel runs where --pin-channels put it.
            for ev in placed:
                ev.wait()
            self._state = "running"
            _running.add(self)
            if self._metrics is not None:
                self._metrics.start()
        for w in self.warnings:
            logger.warning(w)
        logger.info("mpcache: engine %s, %d channel%s, %s", self.engine_name(),
                    self._engine.nchannels, "" if self._engine.nchannels == 1 else "s",
                    self._describe_listeners())
        return self

    def _run_channel(self, i, cpus, placed):
        try:
            if cpus:
                # On Linux pid 0 is the calling thread: this pins only channel i.
                try:
                    os.sched_setaffinity(0, {cpus[i % len(cpus)]})
                except OSError as e:
                    logger.warning("channel %d: cannot pin to CPU %d: %s", i, cpus[i % len(cpus)], e)
        finally:
            placed.set()
        try:
            self._engine.run_channel(i)
            if not self._stopping:
                raise RuntimeError(f"channel {i}: event loop ended without stop()")
        except BaseException as e:
            self.failures.append(e)
            # run_channel's OSError carries its whole line, channel and
            # errno's text, as strerror (str() would prefix "[Errno N]")
            text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            if not text.startswith(f"channel {i}:"):
                text = f"channel {i} stopped: {text}"
            logger.error("%s", text)
        finally:
            if not self._stopping:
                try:
                    os.write(self._fail_w, b"x")
                except OSError:
                    pass

    def _describe_listeners(self):
        parts = [_fmt_addr(h, p) for h, p in self.addresses]
        if self._unix is not None:
            parts.append(f"unix:{self._unix[1]} (mask {self.settings.unix_mask:03o})")
        return "listening on " + ", ".join(parts) if parts else "no listener"

    def engine_name(self):
        """The I/O engine in use, as the engine reports it in stats."""
        if self._engine is None:
            return self.settings.io_engine
        try:
            st = parse_stats(self._engine.stats(b"mpcache"))
        except Exception:
            return self.settings.io_engine
        return str(st.get("mpcache_io_engine", self.settings.io_engine))

    @property
    def control_fd(self):
        """Readable when a client sent "shutdown" (with -A)."""
        return self._engine.control_fd

    @property
    def failure_fd(self):
        """Readable when a channel loop ended without stop()."""
        return self._fail_r

    def stop(self):
        """Stops every channel, frees the engine, closes and removes the
        listening sockets.  Idempotent and thread-safe."""
        with self._lock:
            if self._state == "stopped":
                return
            self._stopping = True
            if self._metrics is not None:
                # First: it waits for a scrape in progress, which reads the engine.
                self._metrics.stop()
                self._metrics = None
            if self._engine is not None:
                self._engine.stop()
                for t in self._threads:
                    if t is not threading.current_thread():
                        t.join(JOIN_TIMEOUT)
                if any(t.is_alive() for t in self._threads):
                    # Freeing the engine under a live loop would crash; leak it.
                    logger.error("mpcache: a channel did not stop within %ss", JOIN_TIMEOUT)
                else:
                    self._engine.close()
                self._engine = None
            self._threads = []
            self._close_sockets()
            for fd in (self._fail_r, self._fail_w):
                if fd is not None:
                    os.close(fd)
            self._fail_r = self._fail_w = None
            self._state = "stopped"
            _running.discard(self)

    def reload_auth(self):
        """-Y: reads the password file again, as memcached does on SIGHUP.
        Returns False when it cannot be read or is malformed: the table in
        use stays, as in memcached (which says nothing; this logs why)."""
        with self._lock:
            if self._engine is None or self.settings.auth_file is None:
                return False
            try:
                self._engine.reload_auth()
            except ValueError as e:
                logger.warning("%s; the previous password table stays in use", e)
                return False
        return True

    def wait_failure(self, timeout=None):
        """Blocks until a channel fails or timeout; True if one failed."""
        r, _, _ = select.select([self._fail_r], [], [], timeout)
        return bool(r)

    # -- embedded conveniences -------------------------------------------

    @property
    def address(self):
        """(host, port) of the first TCP address, for clients; None if the
        server listens only on a Unix socket."""
        return self.addresses[0] if self.addresses else None

    @property
    def metrics_address(self):
        """(host, port) of the /metrics endpoint, or None without --metrics-listen."""
        return self._metrics.address if self._metrics is not None else None

    @property
    def unix_socket(self):
        return self._unix[1] if self._unix is not None else None

    @property
    def running(self):
        return self._state == "running"

    def stats(self, group=""):
        """What "stats <group>" answers, as {name: value} (ints where the value
        is an integer)."""
        return parse_stats(self.stats_text(group))

    def stats_text(self, group=""):
        if self._engine is None:
            raise RuntimeError("server is not running")
        return self._engine.stats(group.encode() if isinstance(group, str) else group)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        where = self._describe_listeners() if self._state in ("bound", "running") else ""
        return f"<mpcache.Server {self._state}{', ' + where if where else ''}>"


def _fmt_addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _remove_unix_socket(path, ino):
    """Removes the socket file we bound, unless another has taken its place;
    says so when it has to leave it behind."""
    try:
        if os.lstat(path).st_ino != ino:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        why = e.strerror
        # -u drops privileges after binding, and unlinking needs write
        # permission on the directory, which that user may lack.
        problem = unix_socket_dir_problem(path)
        if problem:
            why += f" ({problem})"
        logger.warning("WARNING: the UNIX socket %s is left behind: cannot remove it: %s",
                       path, why)


def unix_socket_dir_problem(path):
    """Why this process, as the user it runs as now, could not remove a file
    in path's directory, or None if it could (the sticky bit aside: the
    socket file is given to the -u user)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    return f"user {user} may not write to {folder}"


def _unix_socket_alive(path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


# Descriptors beyond the connections themselves: listeners, epoll/io_uring
# instances, eventfds, the metrics server, log files.
_FD_SLACK = 64


def _raise_fd_limit(max_conns, backlog):
    """Lets -c connections be open at once, as memcached raises RLIMIT_NOFILE
    to its connection limit, plus a full backlog: io_uring's multishot accept
    takes the whole backlog at once, refused connections included, into a
    descriptor table the kernel caps at this limit (uring.c, uring_setup).
    Only ever raises, and as far as allowed."""
    need = max_conns + backlog + _FD_SLACK
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    except (ValueError, OSError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        logger.warning("open file limit %d is below -c %d; connections beyond it are refused",
                       min(need, hard), max_conns)
