"""bench/loadgen --tls: the persistent and churn modes over TLS against
memcached -Z and both engines, with `stats` from the plaintext notls:
listener, as bench/compare.py's tls- workloads run them.  Speed is never
asserted; every reply is checked by loadgen itself (exit 1 on any error).
"""

import json
import os
import subprocess

import pytest

from tests.support.certs import OPENSSL, SUITE_TLS, client_context, make_certs, tls_flags
from tests.support.servers import BACKENDS, ROOT
from tests.support.tls import TLSServerProcess

LOADGEN = os.path.join(ROOT, "bench", "loadgen")

pytestmark = [
    pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI makes the certificates"),
    pytest.mark.skipif(SUITE_TLS, reason="starts its own TLS servers"),
]


@pytest.fixture(scope="module")
def loadgen():
    r = subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "bench"), "loadgen"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"building loadgen failed:\n{r.stdout}{r.stderr}"
    probe = subprocess.run([LOADGEN, "-p", "1", "--tls"], capture_output=True, text=True)
    if "built without OpenSSL" in probe.stderr:
        pytest.skip("loadgen built without OpenSSL's headers")
    return LOADGEN


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("tls-bench")))


@pytest.fixture
def tls_server(backend, certs):
    if BACKENDS[backend].is_mpcache:
        from mpcache import _engine
        if not _engine.tls_built():
            pytest.skip("mpcache built without OpenSSL")
    srv = TLSServerProcess(BACKENDS[backend], threads=1, context=client_context(certs), plain=True,
                           tls_extra=tls_flags(certs.server_crt, certs.server_key))
    srv.start()
    yield srv
    srv.stop()


def run(loadgen, *args, expect_rc=0):
    cmd = [loadgen, "--json", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == expect_rc, f"{' '.join(cmd)} exited {p.returncode}\n{p.stderr}"
    return json.loads(p.stdout)


@pytest.mark.parametrize("mode", [["--conns", "8"], ["--conns", "4", "--reqs-per-conn", "1"],
                                  ["--conns", "4", "--depth", "8", "--mget", "3"]],
                         ids=["persistent", "churn-1", "pipelined-multiget"])
def test_loadgen_over_tls(loadgen, tls_server, mode):
    common = ["--keys", "500", "--value-size", "300"]
    run(loadgen, "-p", tls_server.plain_port, "--preload-only", *common)
    out = run(loadgen, "-p", tls_server.port, "--tls", "--stats-port", tls_server.plain_port,
              "--stats", "--preloaded", "--duration", "0.5", "--warmup", "0.1",
              "--server-pid", tls_server.proc.pid, *common, *mode)
    assert out["errors"] == 0
    assert out["requests"] > 0 and out["hit_ratio"] == 1.0
    if "--reqs-per-conn" in mode:
        assert out["conns"] > 0
    # the server counted about the window's gets (the stats are read at its
    # edges, a few requests either way): stats came from the notls port
    assert out["server_stats_delta"]["cmd_get"] >= 0.9 * out["requests"]


def test_loadgen_tls_against_plaintext_is_an_error(loadgen, tls_server):
    out = run(loadgen, "-p", tls_server.plain_port, "--tls", "--keys", "10", "--duration", "0.3",
              "--warmup", "0", "--conns", "1", "--timeout", "1", expect_rc=1)
    assert out["errors"] > 0
