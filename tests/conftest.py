"""Fixtures for the suites that run against real servers.

A test that takes the `backend` fixture runs once per backend (memcached, the
reference, and every mpcache engine; see tests/support/servers.py).  Mark it
`mpcache_only` for APIs memcached does not have.

  server          a running server of the backend, flushed, shared per session
  servers3        three such servers (HashClient)
  server_factory  starts servers with custom flags; stopped after the test

A server that died during a test fails that test with the server's output.
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support.raw import RawConn  # noqa: E402
from tests.support.servers import (  # noqa: E402
    BACKENDS, ServerProcess, kill_servers_on_sigterm, mpcache_backends, selected_backends)


def pytest_configure(config):
    config.addinivalue_line("markers", "mpcache_only: run only against the mpcache backends")
    kill_servers_on_sigterm()


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("mpcache_only"):
        names = mpcache_backends()
    else:
        names = selected_backends()
    # Session scope groups the tests by backend, so each backend's shared
    # servers start once.
    metafunc.parametrize("backend", names, scope="session")


class ServerPool:
    """Servers shared between tests, keyed by backend and flags.  A start
    failure is remembered, so every later test fails at once with the same
    message instead of waiting for another start-up timeout."""

    def __init__(self):
        self.servers = {}
        self.failures = {}

    def get(self, backend, index=0, **kw):
        key = (backend, index, tuple(sorted(kw.items())))
        if key in self.failures:
            pytest.fail(self.failures[key], pytrace=False)
        srv = self.servers.get(key)
        if srv is not None and not srv.alive():
            # It died in an earlier test, which reported it; start afresh.
            srv.stop()
            srv = None
        if srv is None:
            srv = ServerProcess(BACKENDS[backend], **kw)
            try:
                srv.start()
            except AssertionError as e:
                self.failures[key] = str(e)
                raise
            self.servers[key] = srv
        return srv

    def stop_all(self):
        for srv in self.servers.values():
            srv.stop()
        self.servers.clear()


@pytest.fixture(scope="session")
def server_pool():
    pool = ServerPool()
    yield pool
    pool.stop_all()


def flush(srv):
    with RawConn(srv.addr) as c:
        reply = c.call(b"flush_all\r\n")
    assert reply == b"OK\r\n", f"flush_all on {srv.name}: {reply!r}"


def check_alive(srv):
    if not srv.alive():
        pytest.fail(f"{srv.name} died (exit status {srv.proc.returncode}) during the test\n"
                    f"command: {' '.join(srv.cmd)}\noutput:\n{srv.output()}", pytrace=False)


@pytest.fixture
def server(server_pool, backend):
    srv = server_pool.get(backend)
    flush(srv)
    yield srv
    check_alive(srv)


@pytest.fixture
def servers3(server_pool, backend):
    srvs = [server_pool.get(backend, index=i) for i in range(3)]
    for srv in srvs:
        flush(srv)
    yield srvs
    for srv in srvs:
        check_alive(srv)


@pytest.fixture
def server_factory(backend):
    """start(**flags) -> a fresh server of the test's backend, e.g.
    start(threads=4, max_item_size="2m", extra=("-A",))."""
    started = []

    def start(**kw):
        srv = ServerProcess(BACKENDS[backend], **kw)
        started.append(srv)
        return srv.start()

    yield start
    dead = [s for s in started if s.proc is not None and s.expect_alive and not s.alive()]
    for srv in started:
        srv.stop()
    for srv in dead:
        check_alive(srv)
