"""The server process as tools see it: it stops on SIGTERM and SIGINT with
status 0, and `shutdown` works only with -A."""

import os
import signal
import time

import pytest

from tests.support.raw import RawConn


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
