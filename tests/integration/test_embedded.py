"""The embedded API: mpcache.Server runs the engine on background threads
inside the caller's process (memcached has no such thing, so these run only
for the mpcache backends, each with its own I/O engine)."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from pymemcache.client.base import Client

from tests.support.servers import BACKENDS, ROOT

pytestmark = pytest.mark.mpcache_only


@pytest.fixture
def io_engine(backend):
    return dict(BACKENDS[backend].env).get("MPCACHE_IO_ENGINE", "auto")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_embedded_server_serves_clients(io_engine):
    import mpcache
    with mpcache.Server(port=0, threads=1, memory_mb=64, io_engine=io_engine) as srv:
        assert srv.running
        host, port = srv.address
        assert host == "127.0.0.1" and port > 0
        mc = Client((host, port), default_noreply=False, connect_timeout=5, timeout=5)
        try:
            assert mc.set(b"k", b"v", flags=5) is True
            assert mc.get(b"k") == b"v"
            assert mc.incr(b"n", 1) is None
            mc.set(b"n", b"41")
            assert mc.incr(b"n", 1) == 42
            value, cas = mc.gets(b"k")
            assert mc.cas(b"k", b"w", cas) is True
            assert mc.get_many([b"k", b"n"]) == {b"k": b"w", b"n": b"42"}
            assert mc.version() == b"1.6.18"
            stats = srv.stats()
            assert stats["curr_items"] == 2
            assert stats["threads"] == 1
            assert stats["limit_maxbytes"] == 64 * 1024 * 1024
            assert srv.stats("mpcache")["mpcache_io_engine"] == io_engine
        finally:
            mc.close()
    assert not srv.running
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()


def test_two_embedded_servers_are_independent(io_engine):
    import mpcache
    with mpcache.Server(port=0, io_engine=io_engine) as a, \
            mpcache.Server(port=0, threads=2, io_engine=io_engine) as b:
        assert a.address != b.address
        ca = Client(a.address, default_noreply=False, timeout=5)
        cb = Client(b.address, default_noreply=False, timeout=5)
        try:
            ca.set(b"k", b"a")
            cb.set(b"k", b"b")
            assert ca.get(b"k") == b"a" and cb.get(b"k") == b"b"
        finally:
            ca.close()
            cb.close()


def test_start_stop_cycles_leak_no_descriptors(io_engine):
    import mpcache
    before = open_fds()
    for i in range(5):
        with mpcache.Server(port=0, threads=2, io_engine=io_engine) as srv:
            mc = Client(srv.address, default_noreply=False, timeout=5)
            mc.set(b"k", b"%d" % i)
            assert mc.get(b"k") == b"%d" % i
            mc.close()
    assert open_fds() <= before + 1


def test_embedded_in_a_fresh_interpreter_exits_cleanly(io_engine):
    """A program that starts a server and returns without stopping it must
    still exit (the server's threads must not keep the process alive)."""
    code = textwrap.dedent(f"""
        import socket, mpcache
        srv = mpcache.Server(port=0, io_engine={io_engine!r}).start()
        s = socket.create_connection(srv.address, timeout=5)
        s.sendall(b"set k 0 0 1\\r\\nx\\r\\nget k\\r\\n")
        buf = b""
        while not buf.endswith(b"END\\r\\n"):
            buf += s.recv(100)
        print(buf)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert "STORED\\r\\nVALUE k 0 1\\r\\nx\\r\\nEND\\r\\n" in proc.stdout, proc.stdout
