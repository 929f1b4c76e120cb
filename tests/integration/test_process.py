"""The server process as tools see it: it stops on SIGTERM and SIGINT with
status 0, `shutdown` works only with -A, and a channel whose event loop
fails ends it with status 1 and the reason."""

import errno
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support.raw import RawConn
from tests.support.servers import HOST, ROOT, free_port, mpcache_backends


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stops_on_signal(server_factory, sig):
    srv = server_factory()
    with RawConn(srv.addr) as c:
        assert c.call(b"set k 0 0 1\r\nx\r\n") == b"STORED\r\n"
        srv.expect_alive = False
        os.kill(srv.proc.pid, sig)
        t0 = time.monotonic()
        assert srv.proc.wait(10) == 0, srv.output()
        assert time.monotonic() - t0 < 5
        assert c.read_until_eof(timeout=5).endswith(b"<EOF>")


def test_shutdown_disabled_without_A(server):
    with RawConn(server.addr) as c:
        assert c.call(b"shutdown\r\n") == b"ERROR: shutdown not enabled\r\n"
        assert c.call(b"get k\r\n") == b"END\r\n"
    assert server.alive()


@pytest.mark.parametrize("mode", [b"", b" graceful"], ids=["immediate", "graceful"])
def test_shutdown_with_A(server_factory, mode):
    srv = server_factory(extra=("-A",))
    with RawConn(srv.addr) as c:
        assert c.call(b"shutdown foo\r\n") == b"CLIENT_ERROR invalid shutdown mode\r\n"
        srv.expect_alive = False
        c.send(b"shutdown" + mode + b"\r\n")
        assert c.read_until_eof(timeout=5) == b"<EOF>"
    assert srv.proc.wait(10) == 0, srv.output()


# ---- a channel loop that fails: its errno reaches the log and the exit status ----

DENY_SYSCALLS = os.path.join(ROOT, "tests", "support", "deny_syscalls.py")
# The kernel refuses what the loop needs first (a seccomp filter, as a
# sandbox would): epoll_create1 for epoll's set-up (with EMFILE, so the errno
# is seen to come through); for io_uring, whose set-up and probe pass,
# io_uring_enter on the loop's first turn (EPERM, as Docker answers).
LOOP_DENIALS = {"mpcache-epoll": ("epoll", "epoll_create1=EMFILE"),
                "mpcache-uring": ("uring", "io_uring_enter")}
FAILED_LINE = {
    "epoll": r"channel 0: event loop failed: Too many open files",
    "uring": r"channel 0: event loop failed: Operation not permitted",
}


@pytest.fixture(params=mpcache_backends() or ["none"])
def failing_loop(request):
    if request.param == "none":
        pytest.skip("no mpcache backend selected")
    return LOOP_DENIALS[request.param]


def test_channel_loop_failure_is_logged_and_exits_1(failing_loop):
    engine, syscall = failing_loop
    cmd = [sys.executable, DENY_SYSCALLS, syscall, sys.executable, "-m", "mpcache",
           "-p", str(free_port()), "-l", HOST, "-U", "0", "-t", "1", "--io-engine", engine]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
                         stdin=subprocess.DEVNULL)
    lines = res.stderr.splitlines()
    # memcached's EXIT_FAILURE
    assert res.returncode == 1, res.stderr
    assert len(lines) == 2 and re.fullmatch(FAILED_LINE[engine], lines[0]), res.stderr
    assert lines[1] == "Exiting on error"


def test_channel_loop_failure_keeps_its_errno_in_failures():
    """The embedded server: Server.failures holds run_channel's OSError."""
    script = ("import mpcache\n"
              "srv = mpcache.Server(port=0, io_engine='epoll').start()\n"
              "assert srv.wait_failure(20)\n"
              "srv.stop()\n"
              "print(repr([(isinstance(e, OSError), e.errno, e.strerror) for e in srv.failures]))\n")
    res = subprocess.run([sys.executable, DENY_SYSCALLS, "epoll_create1", sys.executable, "-c",
                          script], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert res.stdout == repr([(True, errno.EPERM,
                                "channel 0: event loop failed: Operation not permitted")]) + "\n"
