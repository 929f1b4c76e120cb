"""Process chores of the daemon: port file, pid file, daemonizing, dropping
privileges, core dumps.  Each does what memcached 1.6 does, with the
differences noted where they are."""

import os
import pwd
import resource
import sys

from .config import EX_NOUSER, EX_OSERR, EX_USAGE, ConfigError


def write_port_file(path, report):
    """MEMCACHED_PORT_FILENAME: one "TCP INET: <port>" or "TCP INET6: <port>"
    line per listening address, then a "UDP ..." one per UDP address (-U),
    written to "<path>.lck" and renamed into place, so a reader never sees
    half a file (as memcached 1.6).  report: (transport, family, port)."""
    tmp = f"{path}.lck"
    try:
        with open(tmp, "w") as f:
            for transport, family, port in report:
                f.write(f"{transport} {family}: {port}\n")
        os.rename(tmp, path)
    except OSError as e:
        raise ConfigError(f"Failed to open \"{tmp}\": {e.strerror}", EX_OSERR) from None


def write_pid_file(path):
    """memcached's save_pid: warn about a live pid in an old file, write
    "<pid>\\n" to "<path>.tmp" and rename it into place."""
    try:
        with open(path) as f:
            old = int(f.read().split()[0])
        if old > 0 and old != os.getpid():
            os.kill(old, 0)
            print(f"WARNING: The pid file contained the following (running) pid: {old}",
                  file=sys.stderr)
    except (OSError, ValueError, IndexError):
        pass
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(tmp, path)
    except OSError as e:
        raise ConfigError(f"Could not open the pid file {tmp} for writing: {e.strerror}",
                          EX_OSERR) from None


def remove_pid_file(path):
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return   # another process took the file over: not ours
        os.unlink(path)
    except OSError:
        pass


def check_root(user):
    """memcached refuses to run as root without -u; so do we (tests and
    scripts running as root pass -u root)."""
    if (os.getuid() == 0 or os.geteuid() == 0) and not user:
        raise ConfigError("can't run as root without the -u switch", EX_USAGE)


def lookup_user(user):
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"can't find the user {user} to switch to", EX_NOUSER) from None


def drop_privileges(pw):
    """setgid, supplementary groups, setuid: only when running as root, as
    memcached (for other users -u is ignored)."""
    if os.geteuid() != 0 or pw.pw_uid == 0:
        return
    try:
        os.setgid(pw.pw_gid)
        os.initgroups(pw.pw_name, pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as e:
        raise ConfigError(f"failed to assume identity of user {pw.pw_name}: {e.strerror}",
                          EX_OSERR) from None


def enable_coredumps():
    """-r: raise the core file limit to the hard limit (memcached's -r)."""
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    except (OSError, ValueError) as e:
        print(f"failed to ensure corefile creation: {e}", file=sys.stderr)


class Daemon:
    """-d: double fork, new session, cwd /, stdio to /dev/null.

    Unlike memcached (whose daemon() parent exits at once), the starting
    process waits until the server is serving and exits with the server's
    start-up status, so `mpcache -d && client ...` works and a start-up error
    is reported where it was asked for.  Until ready() the daemon keeps the
    caller's stderr, so its error messages still reach the terminal."""

    def __init__(self):
        self._status_w = None

    def detach(self):
        r, w = os.pipe()
        if os.fork() > 0:
            os.close(w)
            status = b""
            while True:
                chunk = os.read(r, 1)
                if not chunk:
                    break
                status += chunk
            # No status byte: the daemon died before it was ready.
            os._exit(status[0] if status else 1)
        os.close(r)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        os.chdir("/")
        self._status_w = w

    def ready(self):
        """Serving: release the starting process and let go of its stdio."""
        if self._status_w is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        self._report(0)

    def failed(self, code):
        self._report(code)

    def _report(self, code):
        if self._status_w is None:
            return
        try:
            os.write(self._status_w, bytes([code & 0xFF]))
        except OSError:
            pass
        os.close(self._status_w)
        self._status_w = None
