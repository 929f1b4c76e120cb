"""`stats` against memcached 1.6.18, side by side (issue 13, item 6).

For the same flags, memcached and both mpcache engines print the same stat
names, in the same order, in `stats`, `stats settings`, `stats items`,
`stats slabs` and `stats conns`: tools that read stats by count or by
position work on either.  mpcache's own lines are in `stats mpcache` (and
`stats channels`), groups memcached does not have.

The counters memcached keeps move here for the same causes: evictions (per
class too), memory reused from expired items (reclaimed, expired_unfetched),
stores refused under -M (outofmemory), -R's yields, idle kicks, the expiry
sweep (crawler_*), and "stats reset" zeroes what memcached's zeroes.
"""

import re
import socket
import time

import pytest

from tests.support.raw import stats, wait_for_stat
from tests.support.servers import BACKENDS, ServerProcess, selected_backends

# Flags that change which names memcached prints, and a plain start.
FLAG_SETS = [
    (),
    ("-o", "idle_timeout=5"),
    ("-o", "no_maxconns_fast"),
    ("-R", "1", "-C", "-M"),
]


def _servers(flags, **kw):
    names = selected_backends()
    if "memcached" not in names or len(names) < 2:
        pytest.skip("needs memcached and an mpcache backend")
    return [ServerProcess(BACKENDS[n], extra=tuple(flags), **kw) for n in names]


def _traffic(srv):
    """Items in three slab classes, a hit and a miss, and a connection that
    stays open for `stats conns`."""
    s = srv.connect()
    for i, size in enumerate((100, 1000, 10000)):
        s.sendall(b"set k%d 0 0 %d\r\n%s\r\n" % (i, size, b"v" * size))
        assert s.recv(64) == b"STORED\r\n"
    s.sendall(b"get k0 nothere\r\n")
    want = b"VALUE k0 0 100\r\n" + b"v" * 100 + b"\r\nEND\r\n"
    got = b""
    while len(got) < len(want):
        got += s.recv(4096)
    assert got == want
    return s


def _names(text_stats):
    return list(text_stats)


def _per_class_fields(st, pattern):
    """{class: [field, ...]} for lines named by pattern (class, field)."""
    out = {}
    for name in st:
        m = re.fullmatch(pattern, name)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def _shape(srv):
    """What the comparison looks at: every group's names, per-class and
    per-connection lines reduced to their field lists."""
    general = _names(stats(srv.addr))
    settings = _names(stats(srv.addr, b"settings"))
    items = _per_class_fields(stats(srv.addr, b"items"), r"items:(\d+):(\w+)")
    slabs_st = stats(srv.addr, b"slabs")
    slabs = _per_class_fields(slabs_st, r"(\d+):(\w+)")
    slab_totals = [n for n in slabs_st if ":" not in n]
    conns = _per_class_fields(stats(srv.addr, b"conns"), r"(\d+):(\w+)")
    # every class and every connection of one kind has the same fields
    item_fields = {tuple(v) for v in items.values()}
    slab_fields = {tuple(v) for v in slabs.values()}
    conn_fields = {tuple(v) for v in conns.values()}
    return {"stats": general, "stats settings": settings, "stats items": item_fields,
            "stats slabs": slab_fields, "stats slabs totals": slab_totals,
            "stats conns": conn_fields}


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: " ".join(f) or "defaults")
def test_stat_names_and_order_match_memcached(flags):
    shapes = {}
    for srv in _servers(flags):
        with srv:
            conn = _traffic(srv)
            try:
                shapes[srv.name] = _shape(srv)
            finally:
                conn.close()
    ref = shapes.pop("memcached")
    assert len(ref["stats"]) > 80 and len(ref["stats items"]) == 1
    for name, got in shapes.items():
        for group, want in ref.items():
            if isinstance(want, list):
                assert set(got[group]) == set(want), (name, group, flags)
            assert got[group] == want, (name, group, flags)


def test_names_follow_the_crawler_switch():
    """"lru_crawler disable" takes lru_crawler_running and _starts out of
    `stats` in memcached; enable brings them back."""
    seen = {}
    for srv in _servers(()):
        with srv:
            switched = []
            with srv.connect() as s:
                for command, want in ((b"disable", "no"), (b"enable", "yes")):
                    s.sendall(b"lru_crawler " + command + b"\r\n")
                    assert s.recv(64) == b"OK\r\n"
                    wait_for_stat(srv.addr, b"settings", "lru_crawler", want)
                    switched.append((_names(stats(srv.addr)),
                                     stats(srv.addr, b"settings")["lru_crawler"]))
            seen[srv.name] = tuple(switched)
    ref = seen.pop("memcached")
    assert "lru_crawler_starts" not in ref[0][0] and "lru_crawler_starts" in ref[1][0]
    for name, got in seen.items():
        assert got == ref, name


def test_mpcache_lines_are_in_their_own_group():
    for srv in _servers(()):
        if not srv.backend.is_mpcache:
            continue
        with srv:
            general = stats(srv.addr)
            assert not [n for n in general if n.startswith("mpcache_")]
            assert not [n for n in stats(srv.addr, b"settings") if n.startswith("mpcache_")]
            own = stats(srv.addr, b"mpcache")
            assert list(own)[:2] == ["mpcache_io_engine", "mpcache_channels"]
            assert own["mpcache_io_engine"] == stats(srv.addr, b"channels")["engine"]
            assert own["mpcache_channels"] == general["threads"]
            assert int(own["mpcache_requests"]) >= 4   # the stats requests above
            from mpcache._engine import own_totals
            assert [n for n in own][2:] == ["mpcache_" + n for n, _ in own_totals()]


def test_stats_conns_shows_every_client_address(server):
    """Each client's own address, on io_uring too (asked of the direct
    descriptor with IORING_OP_URING_CMD: SO_PEERNAME), and the address it
    reached as listen_addr."""
    clients = [server.connect() for _ in range(3)]
    try:
        for c in clients:
            c.sendall(b"version\r\n")
            assert c.recv(64).startswith(b"VERSION ")
        conns = stats(server.addr, b"conns")
        addrs = {v for k, v in conns.items() if k.endswith(":addr")}
        for c in clients:
            host, port = c.getsockname()
            assert f"tcp:{host}:{port}" in addrs
        local = {v for k, v in conns.items() if k.endswith(":listen_addr")}
        assert local == {"tcp:%s:%d" % server.addr}
        assert "unknown" not in addrs
    finally:
        for c in clients:
            c.close()


# ---- the counters move, on every backend ----

def _fill(srv, n, size, ttl=0, prefix=b"k"):
    """n pipelined noreply sets, then a round trip so they are all done."""
    val = b"x" * size
    with srv.connect() as s:
        for start in range(0, n, 500):
            s.sendall(b"".join(b"set %s%d 0 %d %d noreply\r\n%s\r\n"
                               % (prefix, i, ttl(i) if callable(ttl) else ttl, size, val)
                               for i in range(start, min(n, start + 500))))
        s.sendall(b"mn\r\n")
        buf = b""
        while not buf.endswith(b"MN\r\n"):
            chunk = s.recv(65536)
            assert chunk
            buf += chunk


def _class_sum(st, field):
    return sum(int(v) for k, v in st.items() if k.endswith(":" + field))


def test_evictions_are_counted_per_class(server_factory):
    # -t 1 -m 8: eight 1 MiB pages (mpcache: one shard)
    srv = server_factory(threads=1, memory_mb=8)
    # every other item has an expiry time; none is ever fetched
    _fill(srv, 20000, 1000, ttl=lambda i: 3600 * (i % 2))
    st, items = stats(srv.addr), stats(srv.addr, b"items")
    evicted = int(st["evictions"])
    assert evicted > 5000
    assert _class_sum(items, "evicted") == evicted
    assert int(st["evicted_unfetched"]) == evicted == _class_sum(items, "evicted_unfetched")
    assert 0 < _class_sum(items, "evicted_nonzero") < evicted
    assert int(st["curr_items"]) + evicted == 20000


def test_memory_of_expired_items_is_reclaimed(server_factory):
    srv = server_factory(threads=1, memory_mb=8)
    # memory full of items that expire together, then new stores reuse it
    start = time.time()
    _fill(srv, 12000, 1000, ttl=2, prefix=b"old")
    time.sleep(max(0.0, start + 3.2 - time.time()))
    _fill(srv, 6000, 1000, prefix=b"new")
    st, items = stats(srv.addr), stats(srv.addr, b"items")
    reclaimed = int(st["reclaimed"])
    assert reclaimed > 0
    assert _class_sum(items, "reclaimed") == reclaimed
    # never fetched: each reclaimed one counts, and so do those the expiry
    # sweep (memcached's crawler) freed first
    unfetched = reclaimed + int(st["crawler_reclaimed"])
    assert int(st["expired_unfetched"]) == unfetched == _class_sum(items, "expired_unfetched")


def test_out_of_memory_is_counted_per_class(server_factory):
    srv = server_factory(threads=1, memory_mb=8, extra=("-M",))
    val = b"x" * 1000
    refused = 0
    with srv.connect() as s:
        f = s.makefile("rb")
        for i in range(12000):
            s.sendall(b"set m%d 0 0 1000\r\n%s\r\n" % (i, val))
            line = f.readline()
            assert line in (b"STORED\r\n", b"SERVER_ERROR out of memory storing object\r\n")
            refused += line != b"STORED\r\n"
    st, items = stats(srv.addr), stats(srv.addr, b"items")
    assert refused > 0
    assert int(st["store_no_memory"]) == refused == _class_sum(items, "outofmemory")
    assert int(st["evictions"]) == 0


def test_conn_yields_under_R(server_factory):
    srv = server_factory(threads=1, extra=("-R", "1"))
    with srv.connect() as s:
        s.sendall(b"get a\r\n" * 50 + b"mn\r\n")
        buf = b""
        while not buf.endswith(b"MN\r\n"):
            buf += s.recv(65536)
    assert buf == b"END\r\n" * 50 + b"MN\r\n"
    assert int(stats(srv.addr)["conn_yields"]) > 10


@pytest.mark.parametrize("budget", ["2", "5"])
def test_conn_yields_count_as_memcacheds(budget):
    """A pipeline of gets at -R 2 and -R 5: as many yields as memcached
    counts, a spent budget counting even when the input ended with it.
    (memcached's state machine also spends budget writing replies mid-batch,
    so other mixes, and -R 1, can count one more there.)"""
    counts = {}
    for srv in _servers(("-R", budget), threads=1):
        with srv:
            seen = []
            for n in (3, 4, 10, 11, 50):
                with srv.connect() as s:
                    s.sendall(b"get a\r\n" * (n - 1) + b"mn\r\n")
                    buf = b""
                    while not buf.endswith(b"MN\r\n"):
                        buf += s.recv(65536)
                seen.append(int(stats(srv.addr)["conn_yields"]))
            counts[srv.name] = seen
    ref = counts.pop("memcached")
    assert ref[-1] > 5
    for name, got in counts.items():
        assert got == ref, name


def test_idle_kicks(server_factory):
    srv = server_factory(threads=1, extra=("-o", "idle_timeout=1"))
    assert stats(srv.addr)["idle_kicks"] == "0"
    with srv.connect(timeout=15) as s:
        assert s.recv(16) == b""     # closed by the server
    assert int(stats(srv.addr)["idle_kicks"]) >= 1


def test_stats_reset_zeroes_what_memcached_zeroes(server_factory):
    srv = server_factory(threads=1, memory_mb=8)
    _fill(srv, 20000, 1000)
    with srv.connect() as s:
        s.sendall(b"get k19999\r\n")
        assert s.recv(4096).endswith(b"END\r\n")
        before = stats(srv.addr, b"items")
        assert _class_sum(before, "evicted") > 0
        s.sendall(b"stats reset\r\n")
        assert s.recv(64) == b"RESET\r\n"
    st, items, slabs = stats(srv.addr), stats(srv.addr, b"items"), stats(srv.addr, b"slabs")
    for name in ("total_items", "evictions", "evicted_unfetched", "reclaimed", "get_hits",
                 "cmd_set", "rejected_connections"):
        assert st[name] == "0", name
    # the listeners no longer count; the connection that asked does
    assert st["total_connections"] == "1"
    for field in ("evicted", "evicted_nonzero", "evicted_time", "evicted_unfetched",
                  "outofmemory", "reclaimed", "hits_to_cold"):
        assert _class_sum(items, field) == 0, field
    for field in ("get_hits", "cmd_set"):
        assert _class_sum(slabs, field) == 0, field
    assert int(st["curr_items"]) > 0     # not a counter


# ---- mpcache only ----

@pytest.mark.mpcache_only
def test_hash_algorithm_names_the_stores_hash(server):
    # ext/store/store.h MP_HASH_NAME: neither murmur3 nor jenkins
    assert stats(server.addr, b"settings")["hash_algorithm"] == "mulfold64"


@pytest.mark.mpcache_only
def test_the_expiry_sweep_counts_as_memcacheds_crawler(server_factory):
    srv = server_factory(threads=1)
    # keys that stay, as long as the brief ones, so every class those use
    # shows in "stats items" (as memcached, it lists classes holding items)
    _fill(srv, 200, 10, prefix=b"stays")
    _fill(srv, 200, 10, ttl=1, prefix=b"brief")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = stats(srv.addr)
        if int(st["crawler_reclaimed"]) == 200:
            break
        time.sleep(0.2)
    items = stats(srv.addr, b"items")
    assert int(st["crawler_reclaimed"]) == 200 == _class_sum(items, "crawler_reclaimed")
    assert int(st["expired_unfetched"]) == 200 == _class_sum(items, "expired_unfetched")
    assert _class_sum(items, "crawler_items_checked") >= 400


@pytest.mark.mpcache_only
def test_embedded_servers_keep_their_own_reset_and_crawler(backend):
    """Two engines in one process: a reset or "lru_crawler disable" on one
    does not reach the other (the baseline and the switch are per engine)."""
    import mpcache
    io_engine = dict(BACKENDS[backend].env).get("MPCACHE_IO_ENGINE", "auto")

    def call(srv, line):
        with socket.create_connection(srv.address, timeout=5) as s:
            s.sendall(line)
            return s.recv(4096)

    servers = [mpcache.Server(port=0, threads=1, io_engine=io_engine) for _ in range(3)]
    for srv in servers:
        srv.start()
    try:
        for srv in servers:
            assert call(srv, b"set a 0 0 1\r\nx\r\n") == b"STORED\r\n"
        # more engines than the old process-wide table's slot 0 would keep apart
        for srv in servers[:2]:
            assert call(srv, b"stats reset\r\n") == b"RESET\r\n"
        assert [srv.stats()["total_items"] for srv in servers] == [0, 0, 1]
        assert call(servers[0], b"set b 0 0 1\r\nx\r\n") == b"STORED\r\n"
        assert [srv.stats()["total_items"] for srv in servers] == [1, 0, 1]
        assert call(servers[1], b"lru_crawler disable\r\n") == b"OK\r\n"
        assert [srv.stats("settings")["lru_crawler"] for srv in servers] == ["yes", "no", "yes"]
        dump = call(servers[0], b"lru_crawler metadump all\r\n")
        assert dump.startswith(b"key=") and dump.endswith(b"\nEND\r\n"), dump
        assert call(servers[1], b"lru_crawler metadump all\r\n") == \
            b"CLIENT_ERROR lru crawler disabled\r\n"
    finally:
        for srv in servers:
            srv.stop()
