"""The I/O engines' own guarantees: falling back when io_uring is forbidden,
and no leak of descriptors, slots or memory under connection churn, resets
mid-reply and many idle connections.  Each runs on every mpcache engine."""

import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from tests.support.raw import stats
from tests.support.servers import (BACKENDS, HOST, ROOT, Backend, ServerProcess, free_port,
                                   mpcache_backends)

NO_IO_URING = os.path.join(ROOT, "tests", "support", "no_io_uring.py")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid):
    """The server's descriptor count once the closes this test's own short
    connections caused have been processed."""
    last = open_fds(pid)
    for _ in range(40):
        time.sleep(0.1)
        now = open_fds(pid)
        if now == last:
            return now
        last = now
    return last


def recv_exact(sock, n):
    """Up to n bytes: fewer only if the server closed first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def set_get(addr, key=b"probe", value=b"v"):
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key))
        want = b"STORED\r\nVALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)
        return recv_exact(s, len(want)) == want


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def abort(sock):
    """Close with RST: the server sees a reset, not an orderly close."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ---- io_uring forbidden, as in a container with the default seccomp profile ----

def test_auto_falls_back_to_epoll_when_io_uring_is_denied():
    backend = Backend("mpcache-no-io-uring", (sys.executable, NO_IO_URING, sys.executable, "-m", "mpcache"),
                      env=(("MPCACHE_IO_ENGINE", "auto"),))
    with ServerProcess(backend, threads=2) as srv:
        st = stats(srv.addr, b"mpcache")
        assert st["mpcache_io_engine"] == "epoll"
        assert set_get(srv.addr, b"fallback", b"served")
        assert srv.alive()


def test_uring_required_but_denied_exits_with_the_reason():
    cmd = [sys.executable, NO_IO_URING, sys.executable, "-m", "mpcache", "-p", str(free_port()),
           "-l", HOST, "-U", "0", "--io-engine", "uring"]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run(cmd, capture_output=True, timeout=30, env=env, cwd=ROOT)
    assert res.returncode != 0
    err = res.stderr.decode()
    assert "io_uring is not available: io_uring_setup: Operation not permitted" in err, err
    assert "Traceback" not in err


# ---- churn, resets and idle connections on every engine ----

@pytest.fixture(params=mpcache_backends() or ["none"])
def engine(request):
    if request.param == "none":
        pytest.skip("no mpcache backend selected")
    return BACKENDS[request.param]


CHURN_CYCLES = 100_000
CHURN_THREADS = 4


def churn(addr, n, errors):
    req = b"get churn\r\n"
    want = b"VALUE churn 0 2\r\nok\r\nEND\r\n"
    for i in range(n):
        try:
            s = socket.create_connection(addr, timeout=5)
            s.sendall(req)
            buf = recv_exact(s, len(want))
            s.close()
        except OSError as e:
            errors.append(f"cycle {i}: {e!r}")
            return
        if buf != want:
            errors.append(f"cycle {i}: {buf!r}")
            return


def test_connection_churn_leaks_nothing(engine):
    # -c 1024: a leaked slot or direct descriptor per connection would exhaust
    # the table (and the registered file table) long before 100,000 cycles
    with ServerProcess(engine, threads=2, conn_limit=1024) as srv:
        assert set_get(srv.addr, b"churn", b"ok")
        assert wait_for(lambda: stats(srv.addr)["curr_connections"] == "1")
        base = stats(srv.addr)
        fds = settled_fds(srv.proc.pid)
        errors = []
        per = CHURN_CYCLES // CHURN_THREADS
        threads = [threading.Thread(target=churn, args=(srv.addr, per, errors))
                   for _ in range(CHURN_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert wait_for(lambda: stats(srv.addr)["curr_connections"] == "1")
        after = stats(srv.addr)
        # the churn, plus the few stats connections this test made meanwhile
        accepted = int(after["total_connections"]) - int(base["total_connections"])
        assert CHURN_CYCLES < accepted < CHURN_CYCLES + 300, accepted
        assert int(after["rejected_connections"]) == 0
        assert wait_for(lambda: open_fds(srv.proc.pid) == fds), (open_fds(srv.proc.pid), fds)
        assert set_get(srv.addr)


def test_reset_mid_reply_and_close_with_sends_in_flight(engine):
    big = b"x" * (1024 * 1024 - 100)
    with ServerProcess(engine, threads=2, memory_mb=64) as srv:
        assert set_get(srv.addr, b"big", big)
        assert wait_for(lambda: stats(srv.addr)["curr_connections"] == "1")
        fds = settled_fds(srv.proc.pid)
        for i in range(200):
            s = socket.create_connection(srv.addr, timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"get big big big big\r\n")
            if i % 3 == 0:
                s.recv(1000)          # part of the reply, then gone
            if i % 2 == 0:
                abort(s)              # reset while the server is sending
            else:
                s.close()             # orderly close with megabytes unread
        assert srv.alive(), srv.output()
        assert wait_for(lambda: stats(srv.addr)["curr_connections"] == "1"), stats(srv.addr)
        assert wait_for(lambda: open_fds(srv.proc.pid) == fds), (open_fds(srv.proc.pid), fds)
        assert set_get(srv.addr, b"after", b"reset")


IDLE = 10_000


def test_ten_thousand_idle_connections(engine):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE + 1000
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
        except (ValueError, OSError):
            pytest.fail(f"the test needs {need} open files; the limit is {soft}/{hard}")
    with ServerProcess(engine, threads=2, conn_limit=10240) as srv:
        fds = settled_fds(srv.proc.pid)
        idle = []
        try:
            for _ in range(IDLE):
                idle.append(socket.create_connection(srv.addr, timeout=10))
            assert wait_for(lambda: stats(srv.addr)["curr_connections"] == str(IDLE + 1), 30), \
                stats(srv.addr)["curr_connections"]
            assert set_get(srv.addr, b"busy", b"served")
            held = open_fds(srv.proc.pid)
            if stats(srv.addr, b"mpcache")["mpcache_io_engine"] == "uring":
                # lwsockets: direct descriptors never enter the process's file table
                assert held == fds, (held, fds)
            else:
                assert held >= fds + IDLE
        finally:
            for s in idle:
                s.close()
        assert wait_for(lambda: stats(srv.addr)["curr_connections"] == "1", 30)
        assert wait_for(lambda: open_fds(srv.proc.pid) == fds), (open_fds(srv.proc.pid), fds)
        assert srv.alive()


def test_stats_channels_shows_the_mechanics_per_channel(engine):
    with ServerProcess(engine, threads=2) as srv:
        n = 200
        with socket.create_connection(srv.addr, timeout=5) as s:
            # one pipelined burst: its replies go out together
            s.sendall(b"set k 0 0 1\r\nx\r\n" + b"get k\r\n" * n)
            want = b"STORED\r\n" + b"VALUE k 0 1\r\nx\r\nEND\r\n" * n
            assert recv_exact(s, len(want)) == want
        st = stats(srv.addr, b"channels")
        own = stats(srv.addr, b"mpcache")
        assert st["engine"] == own["mpcache_io_engine"]
        assert st["channels"] == "2"
        if st["engine"] == "uring":
            assert set(st["features"].split(",")) >= {
                "direct_descriptors", "multishot_accept", "multishot_recv", "provided_buffers",
                "sendmsg_by_reference"}
        else:
            assert st["features"] == "level_triggered"
        per = [{k.split(":", 1)[1]: int(v) for k, v in st.items() if k.startswith(f"{ch}:")}
               for ch in range(2)]
        # the two stats requests made so far are counted too
        assert sum(p["requests"] for p in per) >= n + 1
        for p in per:
            hist = sum(v for k, v in p.items() if k.startswith("turns_with_"))
            # read without locks: an idle channel's 100 ms wake-up may fall between
            assert 0 <= hist - p["loop_turns"] <= 1
            assert p["syscalls"] >= p["syscall_wait"]
        # batching: far fewer sends than requests
        assert sum(p["syscall_write"] for p in per) < n // 4


def test_connections_over_the_limit_are_told_and_closed(engine):
    with ServerProcess(engine, threads=2, conn_limit=8) as srv:
        assert wait_for(lambda: stats(srv.addr)["curr_connections"] == "1")
        held = [socket.create_connection(srv.addr, timeout=5) for _ in range(8)]
        try:
            for s in held:       # each is served, so each was admitted
                s.sendall(b"version\r\n")
                assert recv_exact(s, 16) == b"VERSION 1.6.18\r\n"
            extra = socket.create_connection(srv.addr, timeout=5)
            with extra:
                assert recv_exact(extra, 100) == b"ERROR Too many open connections\r\n"
        finally:
            for s in held:
                s.close()
        assert wait_for(lambda: stats(srv.addr)["curr_connections"] == "1")
        assert int(stats(srv.addr)["rejected_connections"]) >= 1
        assert set_get(srv.addr)


def test_idle_timeout_closes_only_idle_connections(engine):
    with ServerProcess(engine, threads=2, extra=("-o", "idle_timeout=1")) as srv:
        idle = socket.create_connection(srv.addr, timeout=10)
        busy = socket.create_connection(srv.addr, timeout=10)
        idle.sendall(b"version\r\n")
        assert recv_exact(idle, 16) == b"VERSION 1.6.18\r\n"
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            busy.sendall(b"version\r\n")
            assert recv_exact(busy, 16) == b"VERSION 1.6.18\r\n"
            time.sleep(0.2)
        # idle for about four seconds against a one-second limit: closed
        assert idle.recv(100) == b""
        busy.sendall(b"version\r\n")
        assert recv_exact(busy, 16) == b"VERSION 1.6.18\r\n"
        idle.close()
        busy.close()
