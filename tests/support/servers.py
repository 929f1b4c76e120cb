"""Real server processes for the tests: memcached (the reference) and mpcache.

Every test that talks to a server runs once per backend, as uvloop's test
mixins run each test on uvloop and on asyncio.  A backend is one row of
BACKENDS: adding the io_uring engine is one line there.

Servers listen on 127.0.0.1 only, on ports from this suite's range
(PORT_RANGE), each probed free before use.  A server that does not start
fails the test with its command line and stderr.
"""

import atexit
import fcntl
import itertools
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from tests.support.certs import suite_flags, suite_wrap

HOST = "127.0.0.1"
# This suite's ports: other suites and engineers use other ranges.
PORT_RANGE = (24000, 25000)
# A server that is not accepting connections after this long is broken.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class Backend:
    name: str
    argv: tuple          # program and backend-selecting arguments
    env: tuple = ()      # extra environment, (name, value) pairs
    is_mpcache: bool = True
    # mpcache must stop cleanly on SIGTERM; the reference is just killed
    # (memcached takes a second to exit on SIGTERM).
    stop_signal: int = signal.SIGTERM
    # memcached sizes its connection table, and the idle-timeout thread's
    # pass over it, by the hard RLIMIT_NOFILE: under a container's limit of
    # 2^30 one pass of that thread takes minutes, and idle_timeout never fires.
    nofile_cap: int = 0

    def limit_files(self):
        if not self.nofile_cap:
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = self.nofile_cap if hard == resource.RLIM_INFINITY else min(hard, self.nofile_cap)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, cap), cap))

    def command(self, port, threads, memory_mb, max_item_size, conn_limit, extra):
        cmd = list(self.argv) + [
            "-p", str(port), "-l", HOST, "-U", "0",
            "-t", str(threads), "-m", str(memory_mb),
            "-c", str(conn_limit), "-I", str(max_item_size),
        ]
        if os.geteuid() == 0:
            # memcached refuses to run as root without -u; mpcache takes the flag too.
            cmd += ["-u", "root"]
        # MPCACHE_TEST_TLS=1: mpcache gets -Z and a certificate (tests/support/certs.py)
        tls = suite_flags(port) if self.is_mpcache else ()
        return cmd + list(tls) + list(extra)


_MPCACHE = (sys.executable, "-m", "mpcache")

# The reference first: tests run against memcached before mpcache.
BACKENDS = {
    "memcached": Backend("memcached", ("memcached",), is_mpcache=False,
                         stop_signal=signal.SIGKILL, nofile_cap=65536),
    "mpcache-epoll": Backend("mpcache-epoll", _MPCACHE, env=(("MPCACHE_IO_ENGINE", "epoll"),)),
    "mpcache-uring": Backend("mpcache-uring", _MPCACHE, env=(("MPCACHE_IO_ENGINE", "uring"),)),
}


def selected_backends():
    """Backends to test: all, or those named in MPCACHE_TEST_BACKENDS (comma-separated)."""
    wanted = os.environ.get("MPCACHE_TEST_BACKENDS")
    if not wanted:
        return list(BACKENDS)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"MPCACHE_TEST_BACKENDS names unknown backends {unknown}; known: {list(BACKENDS)}")
    return names


def mpcache_backends():
    return [n for n in selected_backends() if BACKENDS[n].is_mpcache]


_port_counter = itertools.count()


def _port_is_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def skip_ports(n):
    for _ in range(n):
        next(_port_counter)


def free_port(port_range=PORT_RANGE):
    """A free loopback port in port_range (this suite's by default).  Start
    points differ per process so concurrent test sessions rarely probe the
    same ports."""
    lo, hi = port_range
    span = hi - lo
    base = (os.getpid() * 37) % span
    for _ in range(span):
        port = lo + (base + next(_port_counter)) % span
        if _port_is_free(port):
            return port
    raise RuntimeError(f"no free port in {port_range}")


class ServerStartError(AssertionError):
    pass


# Every process we started, so none outlives the test session even if a
# fixture's teardown never runs.
_live = set()

@atexit.register
def _kill_leftovers():
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def track(proc):
    """Kills proc at exit (or SIGTERM) if it is still running then."""
    _live.add(proc)


def untrack(proc):
    _live.discard(proc)


def kill_servers_on_sigterm():
    """atexit does not run when the test process is terminated (e.g. by
    `timeout`), and the servers run in their own sessions: stop them first.
    (PR_SET_PDEATHSIG would not survive the servers' -u root setuid.)"""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        _kill_leftovers()
        signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


def capture_file():
    """A temporary file for a child's output.  O_APPEND: the child shares
    the file's offset, and without it a write landing while a test reads
    the file (seek to 0, read) went to offset 0, over the first lines."""
    f = tempfile.TemporaryFile()
    fd = f.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return f


def read_captured(f):
    """Everything written to a capture_file so far, without moving its offset."""
    f.flush()
    fd = f.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0)


def captured_output(f):
    """The last 8000 characters a process wrote to the temporary file f
    (None: nothing captured)."""
    if f is None:
        return ""
    return read_captured(f).decode("utf-8", "replace")[-8000:]


@dataclass
class ServerProcess:
    backend: Backend
    threads: int = 2
    memory_mb: int = 64
    max_item_size: str = "1m"
    conn_limit: int = 1024
    extra: tuple = ()
    udp: bool = False            # -U on the TCP port's number as well
    port: int = 0
    expect_alive: bool = True    # False once a test asked it to exit
    proc: subprocess.Popen = None
    cmd: list = field(default_factory=list)
    _stderr: object = None

    @property
    def name(self):
        return self.backend.name

    @property
    def addr(self):
        return (HOST, self.port)

    def start(self):
        last_error = None
        # A port can be taken between the probe and the server's bind: retry on another.
        for _ in range(3):
            self.port = free_port()
            # a later -U wins over the launcher's -U 0, in both servers
            extra = (("-U", str(self.port)) if self.udp else ()) + tuple(self.extra)
            self.cmd = self.backend.command(self.port, self.threads, self.memory_mb,
                                            self.max_item_size, self.conn_limit, extra)
            env = dict(os.environ)
            env.update(dict(self.backend.env))
            env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
            self._stderr = capture_file()
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=self._stderr, stderr=self._stderr,
                                         env=env, cwd=ROOT, start_new_session=True,
                                         preexec_fn=self.backend.limit_files)
            _live.add(self.proc)
            try:
                self._wait_ready()
                return self
            except ServerStartError as e:
                last_error = e
                self.stop()
                if "in use" not in str(e).lower():
                    break
                # another session's servers sit on the next ports too: look
                # elsewhere in the range
                skip_ports(random.randrange(1000))
        raise last_error

    def _binary_only(self):
        """Started with -B binary or -S: a text request would not be
        answered."""
        extra = list(self.extra)
        return "-S" in extra or any(a == "-B" and b == "binary" for a, b in zip(extra, extra[1:]))

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {rc} before accepting connections\n"
                    f"command: {' '.join(self.cmd)}\noutput:\n{self.output()}")
            try:
                with suite_wrap(socket.create_connection(self.addr, timeout=1.0)) as s:
                    if self._binary_only():
                        # a binary version request; the reply's magic is 0x81
                        s.sendall(bytes([0x80, 0x0b]) + bytes(22))
                        reply = _recv_packet(s)
                        if reply[:1] == b"\x81":
                            self._check_own_port_binary(s)
                            return
                    else:
                        s.sendall(b"version\r\n")
                        reply = _recv_line(s)
                    # a server started with -Y answers before authentication
                    if reply == b"CLIENT_ERROR unauthenticated\r\n":
                        return
                    if reply.startswith(b"VERSION "):
                        self._check_own_port(s)
                        return
                    raise ServerStartError(
                        f"{self.name} answered {reply!r} to version\ncommand: {' '.join(self.cmd)}"
                        f"\noutput:\n{self.output()}")
            except OSError:   # ssl.SSLError too: not listening yet
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} did not accept connections on {self.addr} within {START_TIMEOUT}s\n"
                    f"command: {' '.join(self.cmd)}\noutput:\n{self.output()}")
            time.sleep(0.02)

    def _check_own_port(self, s):
        """The server that answered is this one, not another process that
        took the port between the probe and the bind (tests run in parallel
        on one machine): its stats name our pid."""
        s.sendall(b"stats\r\n")
        for line in _recv_until(s, b"END\r\n").split(b"\r\n"):
            if line.startswith(b"STAT pid "):
                if int(line.split()[2]) != self.proc.pid:
                    raise ServerStartError(f"port {self.port} in use by pid {line.split()[2].decode()}")
                return

    def _check_own_port_binary(self, s):
        """_check_own_port for a server that speaks only the binary
        protocol: its stat packets name our pid.  One started with -S
        answers an auth error instead, and is taken as ours."""
        s.sendall(bytes([0x80, 0x10]) + bytes(22))
        while True:
            packet = _recv_packet(s)
            status, keylen = int.from_bytes(packet[6:8], "big"), int.from_bytes(packet[2:4], "big")
            if status != 0 or keylen == 0:
                return
            if packet[24:24 + keylen] == b"pid":
                pid = int(packet[24 + keylen:])
                if pid != self.proc.pid:
                    raise ServerStartError(f"port {self.port} in use by pid {pid}")
                return

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        """Everything the server wrote to stdout/stderr so far."""
        return captured_output(self._stderr)

    def stop(self):
        """Stops the server; returns its exit status (None if it was not started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, self.backend.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        _live.discard(self.proc)
        return self.proc.returncode

    def connect(self, timeout=5.0):
        s = socket.create_connection(self.addr, timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return suite_wrap(s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self._stderr is not None:
            self._stderr.close()


def _recv_until(s, end):
    buf = b""
    while not buf.endswith(end):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _recv_packet(s):
    """One binary protocol packet: its header, then its body."""
    buf = b""
    while True:
        need = 24 if len(buf) < 24 else 24 + int.from_bytes(buf[8:12], "big")
        if len(buf) >= need:
            break
        chunk = s.recv(need - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _recv_line(s):
    return _recv_until(s, b"\n")


def start_pair(ref, cand):
    """Starts a reference server and a candidate (ServerProcess objects),
    stopping the first if the second cannot start."""
    ref.start()
    try:
        cand.start()
    except BaseException:
        ref.stop()
        raise
    return ref, cand


def start_server(backend_name, **kw):
    return ServerProcess(BACKENDS[backend_name], **kw).start()
