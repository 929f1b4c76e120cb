"""bench/hitmatrix.py's client and sequences against real servers: what it
reports is what the servers hold and answered.  Figures are never asserted
against each other; the counts are checked where they are known exactly (a
cache big enough for every key)."""

import pytest

from bench import hitmatrix
from tests.support.servers import BACKENDS, ServerProcess


@pytest.fixture(params=["memcached", "mpcache-epoll", "mpcache-uring"])
def server(request):
    srv = ServerProcess(BACKENDS[request.param], threads=2, memory_mb=64).start()
    srv.pid = srv.proc.pid
    yield srv
    srv.stop()


def test_fill_counts_what_is_held(server):
    spec = {"kind": "fill", "memory": 64, "keys": 3000, "sizes": "loguniform"}
    r = hitmatrix.run_fill(server, spec)
    f = hitmatrix.size_fn("loguniform")
    assert r["items"] == r["curr_items"] == 3000
    assert r["value_bytes"] == sum(f(i) for i in range(3000))
    assert r["evictions"] == 0


def test_cache_aside_hit_ratio_is_exact_when_everything_fits(server):
    """Every key misses once, the first time it is asked for, and hits after:
    the hit ratio of the measured half is the share of its gets that are not
    a key's first."""
    spec = {"kind": "aside", "memory": 64, "keys": 2000, "sizes": "small", "zipf": 0.99,
            "ops": 8000, "scan_every": 1000, "scan_len": 50}
    seq = list(hitmatrix.aside_sequence(spec, 7))
    # aside_sequence yields the scans' gets too: the measured half is the
    # second half of everything asked
    half = spec["ops"] // 2
    seen, first_in_half, asked = set(), 0, 0
    for n, (key, _) in enumerate(seq):
        if n >= half:
            asked += 1
            first_in_half += key not in seen
        seen.add(key)
    r = hitmatrix.run_aside(server, spec, 7)
    assert r["gets"] == asked
    assert r["hit_ratio"] == pytest.approx((asked - first_in_half) / asked)
    assert r["curr_items"] == len(seen)
    # the slab memory reported holds at least every value, and keeps to -m
    f = hitmatrix.size_fn("small")
    values_mb = sum(f(k) for k in seen) / (1 << 20)
    assert round(values_mb, 1) <= r["slab_mb"] <= 64
