"""/metrics of a real mpcache process: memcached_exporter's names, labels and
types, values that match the traffic sent, and the HTTP endpoint itself.

EXPORTER is the list of series memcached_exporter v0.16 derives from
memcached 1.6's stats (prometheus/memcached_exporter, pkg/exporter/
exporter.go), written down here independently of mpcache/metrics.py so the
two can disagree and this test catch it."""

import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpcache import metrics
from tests.metrics.procs import (HOST, Mpcache, Proc, free_port, http_get,
                                 memcached_version_ok, need, send_traffic)

# name -> (type, label names)
EXPORTER = {
    "memcached_up": ("gauge", ()),
    "memcached_version": ("gauge", ("version",)),
    "memcached_commands_total": ("counter", ("command", "status")),
    "memcached_uptime_seconds": ("counter", ()),
    "memcached_time_seconds": ("gauge", ()),
    "memcached_process_user_cpu_seconds_total": ("counter", ()),
    "memcached_process_system_cpu_seconds_total": ("counter", ()),
    "memcached_current_bytes": ("gauge", ()),
    "memcached_limit_bytes": ("gauge", ()),
    "memcached_current_items": ("gauge", ()),
    "memcached_items_total": ("counter", ()),
    "memcached_read_bytes_total": ("counter", ()),
    "memcached_written_bytes_total": ("counter", ()),
    "memcached_current_connections": ("gauge", ()),
    "memcached_max_connections": ("gauge", ()),
    "memcached_connections_total": ("counter", ()),
    "memcached_connections_rejected_total": ("counter", ()),
    "memcached_connections_yielded_total": ("counter", ()),
    "memcached_connections_listener_disabled_total": ("counter", ()),
    "memcached_accepting_connections": ("gauge", ()),
    "memcached_items_evicted_total": ("counter", ()),
    "memcached_items_reclaimed_total": ("counter", ()),
    "memcached_item_too_large_total": ("counter", ()),
    "memcached_item_no_memory_total": ("counter", ()),
    "memcached_direct_reclaims_total": ("counter", ()),
    "memcached_malloced_bytes": ("gauge", ()),
    "memcached_lru_crawler_enabled": ("gauge", ()),
    "memcached_lru_crawler_sleep": ("gauge", ()),
    "memcached_lru_crawler_to_crawl": ("gauge", ()),
    "memcached_lru_crawler_maintainer_thread": ("gauge", ()),
    "memcached_lru_crawler_hot_percent": ("gauge", ()),
    "memcached_lru_crawler_warm_percent": ("gauge", ()),
    "memcached_lru_crawler_hot_max_factor": ("gauge", ()),
    "memcached_lru_crawler_warm_max_factor": ("gauge", ()),
    "memcached_lru_crawler_starts_total": ("counter", ()),
    "memcached_lru_crawler_reclaimed_total": ("counter", ()),
    "memcached_lru_crawler_items_checked_total": ("counter", ()),
    "memcached_lru_crawler_moves_to_cold_total": ("counter", ()),
    "memcached_lru_crawler_moves_to_warm_total": ("counter", ()),
    "memcached_lru_crawler_moves_within_lru_total": ("counter", ()),
    # "stats items", per slab class
    "memcached_slab_current_items": ("gauge", ("slab",)),
    "memcached_slab_items_age_seconds": ("gauge", ("slab",)),
    "memcached_slab_items_crawler_reclaimed_total": ("counter", ("slab",)),
    "memcached_slab_items_evicted_total": ("counter", ("slab",)),
    "memcached_slab_items_evicted_nonzero_total": ("counter", ("slab",)),
    "memcached_slab_items_evicted_time_seconds": ("counter", ("slab",)),
    "memcached_slab_items_evicted_unfetched_total": ("counter", ("slab",)),
    "memcached_slab_items_expired_unfetched_total": ("counter", ("slab",)),
    "memcached_slab_items_outofmemory_total": ("counter", ("slab",)),
    "memcached_slab_items_reclaimed_total": ("counter", ("slab",)),
    "memcached_slab_items_tailrepairs_total": ("counter", ("slab",)),
    "memcached_slab_mem_requested_bytes": ("counter", ("slab",)),
    "memcached_slab_items_moves_to_cold": ("counter", ("slab",)),
    "memcached_slab_items_moves_to_warm": ("counter", ("slab",)),
    "memcached_slab_items_moves_within_lru": ("counter", ("slab",)),
    "memcached_slab_hot_items": ("gauge", ("slab",)),
    "memcached_slab_warm_items": ("gauge", ("slab",)),
    "memcached_slab_cold_items": ("gauge", ("slab",)),
    "memcached_slab_temporary_items": ("gauge", ("slab",)),
    "memcached_slab_hot_age_seconds": ("gauge", ("slab",)),
    "memcached_slab_warm_age_seconds": ("gauge", ("slab",)),
    "memcached_slab_lru_hits_total": ("counter", ("lru", "slab")),
    # "stats slabs", per slab class
    "memcached_slab_commands_total": ("counter", ("command", "slab", "status")),
    "memcached_slab_chunk_size_bytes": ("gauge", ("slab",)),
    "memcached_slab_chunks_per_page": ("gauge", ("slab",)),
    "memcached_slab_current_pages": ("gauge", ("slab",)),
    "memcached_slab_current_chunks": ("gauge", ("slab",)),
    "memcached_slab_chunks_used": ("gauge", ("slab",)),
    "memcached_slab_chunks_free": ("gauge", ("slab",)),
    "memcached_slab_chunks_free_end": ("gauge", ("slab",)),
}
# The exporter's other series need stats mpcache does not print, as memcached
# does not print them either in the same setup: extstore (only with -o
# ext_path), proxy mode (only with -o proxy_config), and number_temp (only
# with memcached's temporary LRU, -o temporary_ttl).
NOT_SERVED = {"memcached_slab_temporary_items"}
NOT_SERVED_PREFIXES = ("memcached_extstore_", "memcached_proxy_")
EXPECTED = {k: v for k, v in EXPORTER.items() if k not in NOT_SERVED}


SAMPLE_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_NAME = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"')


def typed_families(text):
    """{family name: type} from the exposition's TYPE lines, and
    {sample name: set of label-name tuples} from its sample lines, read as
    written (prometheus_client's parser renames counters to *_total)."""
    types, labels = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name not in types, f"family {name} declared twice"
            types[name] = typ
        elif line and not line.startswith("#"):
            m = SAMPLE_LINE.match(line)
            assert m, line
            names = tuple(sorted(n for n in LABEL_NAME.findall(m.group(2) or "") if n != "le"))
            labels.setdefault(m.group(1), set()).add(names)
    return types, labels


@pytest.fixture(scope="module")
def mpc():
    srv = Mpcache(threads=2).start()
    try:
        expected = send_traffic(srv.addr)
        status, headers, body = http_get(srv.metrics_url)
        assert status == 200, body
        srv.scrape_headers = headers
        srv.text = body.decode()
        srv.expected_commands = expected
        yield srv
        assert srv.alive(), srv.describe()
    finally:
        srv.close()


def samples(text, name):
    return {frozenset(s.labels.items()): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == name}


def test_memcached_families_are_the_exporters(mpc):
    types, labels = typed_families(mpc.text)
    served = {n: t for n, t in types.items() if n.startswith("memcached_")}
    assert served == {n: t for n, (t, _) in EXPECTED.items()}
    for name, (_, labelnames) in EXPECTED.items():
        assert labels[name] == {tuple(sorted(labelnames))}, name
    assert not any(n.startswith(NOT_SERVED_PREFIXES) for n in types)
    assert mpc.scrape_headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_counters_keep_the_exporters_sample_names(mpc):
    """The exporter's counters without _total keep their name (a
    prometheus_client encoder would have renamed them)."""
    lines = mpc.text.splitlines()
    for name in ("memcached_uptime_seconds", "memcached_slab_items_moves_to_cold",
                 "memcached_slab_items_evicted_time_seconds", "memcached_slab_mem_requested_bytes"):
        assert f"# TYPE {name} counter" in lines
        assert any(line.startswith(name + " ") or line.startswith(name + "{") for line in lines)
        assert not any(line.startswith(name + "_total") for line in lines), name


def test_exposition_parses_with_prometheus_client(mpc):
    fams = list(text_string_to_metric_families(mpc.text))
    by_name = {f.name: f for f in fams}
    for name, (typ, _) in EXPECTED.items():
        # the parser files counters under their name without _total
        key = name[: -len("_total")] if typ == "counter" and name.endswith("_total") else name
        assert by_name[key].type == typ, name
        assert by_name[key].samples, name
    n_samples = sum(len(f.samples) for f in fams)
    n_lines = sum(1 for line in mpc.text.splitlines() if line and not line.startswith("#"))
    assert n_samples == n_lines


def test_command_counters_match_the_traffic(mpc):
    got = samples(mpc.text, "memcached_commands_total")
    want = {frozenset({("command", c), ("status", s)}): float(n)
            for (c, s), n in mpc.expected_commands.items()}
    assert got == want


def test_values_match_stats_and_settings(mpc):
    t = mpc.text
    one = lambda name: samples(t, name)[frozenset()]  # noqa: E731
    assert one("memcached_up") == 1.0
    assert samples(t, "memcached_version") == {frozenset({("version", "1.6.18")}): 1.0}
    # 40 sets, 5 deleted, plus "ctr"
    assert one("memcached_current_items") == 36.0
    assert one("memcached_limit_bytes") == 64 * 1024 * 1024
    assert one("memcached_max_connections") == 1024.0
    assert one("memcached_accepting_connections") == 1.0
    per_class = samples(t, "memcached_slab_current_items")
    assert len(per_class) >= 3 and sum(per_class.values()) == 36.0
    assert one("memcached_read_bytes_total") > 40 * 10
    assert samples(t, "mpcache_channels") == {frozenset(): 2.0}
    info = samples(t, "mpcache_info")
    (labels,) = info
    assert dict(labels)["io_engine"] in ("epoll", "uring")
    # every request above is one the engine executed
    assert one("mpcache_requests_total") >= sum(mpc.expected_commands.values())


def test_current_connections_follow_clients(mpc):
    def current():
        return samples(http_get(mpc.metrics_url)[2].decode(), "memcached_current_connections")[
            frozenset()]

    def settle(want):
        deadline = time.monotonic() + 5
        while current() != want and time.monotonic() < deadline:
            time.sleep(0.02)
        return current()

    base = settle(0.0)
    conns = [socket.create_connection(mpc.addr, timeout=5) for _ in range(3)]
    try:
        for c in conns:   # a request each, so every connection is accepted
            c.sendall(b"version\r\n")
            assert c.recv(64).startswith(b"VERSION ")
        assert settle(base + 3) == base + 3
    finally:
        for c in conns:
            c.close()
    assert settle(base) == base


def test_buffer_series_follow_a_stalled_client():
    """A client that does not read a multi-get: its output buffer shows in
    mpcache_channel_buffer_bytes{kind="output"} and an output stall is
    counted; once it is gone, no output buffer is held."""
    mpc = Mpcache(threads=1).start()
    try:
        _stalled_client_series(mpc)
    finally:
        mpc.close()


def _stalled_client_series(mpc):
    def output_bytes(text):
        return sum(v for k, v in samples(text, "mpcache_channel_buffer_bytes").items()
                   if ("kind", "output") in k)

    def stalls(text):
        return sum(samples(text, "mpcache_channel_output_stalls_total").values())

    with socket.create_connection(mpc.addr, timeout=5) as c:
        c.sendall(b"set fat 0 0 300000\r\n" + b"f" * 300000 + b"\r\n")
        assert c.recv(64) == b"STORED\r\n"
    before = http_get(mpc.metrics_url)[2].decode()
    s = socket.create_connection(mpc.addr, timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    try:
        s.sendall(b"get" + b" fat" * 100 + b"\r\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            during = http_get(mpc.metrics_url)[2].decode()
            if output_bytes(during) > 0 and stalls(during) > stalls(before):
                break
            time.sleep(0.05)
        assert output_bytes(during) > 0
        assert stalls(during) > stalls(before)
        assert samples(during, "mpcache_channel_malloc_fails_total")
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    deadline = time.monotonic() + 5
    while output_bytes(http_get(mpc.metrics_url)[2].decode()) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert output_bytes(http_get(mpc.metrics_url)[2].decode()) == 0


def test_http_endpoint(mpc):
    status, headers, body = http_get(mpc.metrics_url, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    text = gzip.decompress(body).decode()
    assert "memcached_up 1.0" in text.splitlines()
    status, headers, body = http_get(f"http://{HOST}:{mpc.metrics_port}/")
    assert status == 200 and b'href="/metrics"' in body
    assert http_get(f"http://{HOST}:{mpc.metrics_port}/nothing")[0] == 404
    # Prometheus asks for OpenMetrics first; the answer stays the text format.
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, _ = http_get(mpc.metrics_url, {"Accept": accept})
    assert headers["Content-Type"] == metrics.CONTENT_TYPE


# ---- the same collector on memcached 1.6.18's own stats ----

class MemcachedStats:
    """What the collector asks an engine for, answered by a real memcached."""

    def __init__(self, addr):
        self.addr = addr

    def stats(self, group=b""):
        with socket.create_connection(self.addr, timeout=5) as s:
            s.sendall(b"stats " + group + b"\r\n" if group else b"stats\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                assert chunk, buf
                buf += chunk
        return buf


@pytest.fixture(scope="module")
def reference():
    need("memcached")
    port = free_port()
    cmd = ["memcached", "-p", str(port), "-l", HOST, "-U", "0", "-t", "2", "-m", "64"]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = Proc(cmd).spawn()
    try:
        proc.wait_until(lambda: memcached_version_ok((HOST, port)), "answer to version")
        proc.addr = (HOST, port)
        proc.expected_commands = send_traffic(proc.addr)
        yield proc
    finally:
        proc.close()


def families_of(engine):
    st = metrics.read_stats(engine)
    return {f.name: f for f in metrics.exporter_families(st)}


def test_collector_gives_memcached_and_mpcache_the_same_series(reference, mpc):
    """The families the exporter's rules give for memcached 1.6.18 and for
    mpcache are the same, and so are the command counters for the same
    traffic: a dashboard cannot tell them apart."""
    mc = families_of(MemcachedStats(reference.addr))
    mp = families_of(MemcachedStats(mpc.addr))
    assert {n: f.type for n, f in mp.items()} == {n: f.type for n, f in mc.items()}
    cmds = lambda fams: {frozenset(s.labels.items()): s.value  # noqa: E731
                         for s in fams["memcached_commands_total"].samples}
    # the memcached reference got the same traffic; mpcache's client is closed,
    # the scrape's own stats requests are not commands
    assert cmds(mc) == cmds(mp)


# ---- per-channel series and latency histograms (engine accessors) ----

class FakeEngine:
    """An engine with the accessors mpcache/metrics.py reads when present."""

    def __init__(self, text):
        self.text = text

    def stats(self, group=b""):
        return self.text.get(group, b"END\r\n")

    def channel_stats(self):
        base = {"requests": 0, "syscalls": 0, "loop_turns": 0, "events": 0, "accepts": 0,
                "sqes": 0, "bytes_read": 0, "bytes_written": 0, "syscall_wait": 0,
                "syscall_read": 0, "syscall_write": 0, "syscall_accept": 0, "syscall_close": 0,
                "syscall_ctl": 0}
        return [dict(base, requests=100, syscalls=30, loop_turns=10, events=25, accepts=4,
                     syscall_read=20, open_conns=3, turn_hist=[1, 2, 3, 4, 0, 0, 0, 0]),
                dict(base, requests=7, syscalls=9, loop_turns=3, events=70, accepts=1,
                     open_conns=1, turn_hist=[0, 0, 0, 0, 0, 0, 1, 2])]

    def command_latency(self):
        bounds_ns = [1000, 2000, 4000]
        return bounds_ns, {"get": ([5, 3, 1, 1], 25_000), "set": ([0, 0, 2, 0], 7_000)}


class FakeServer:
    def __init__(self, engine):
        self._engine = engine


GENERAL_TEXT = (b"STAT version 1.6.18\r\nSTAT mpcache_io_engine epoll\r\nSTAT mpcache_channels 2\r\n"
                b"STAT mpcache_requests 107\r\nEND\r\n")


def scrape(server):
    return metrics.encode_text(metrics.make_registry(server, process=False)).decode()


def test_per_channel_series_and_histograms_from_engine_accessors():
    text = scrape(FakeServer(FakeEngine({b"": GENERAL_TEXT})))
    reqs = samples(text, "mpcache_channel_requests_total")
    assert reqs == {frozenset({("channel", "0")}): 100.0, frozenset({("channel", "1")}): 7.0}
    assert samples(text, "mpcache_channel_accepts_total")[frozenset({("channel", "1")})] == 1.0
    ops = samples(text, "mpcache_channel_io_operations_total")
    assert ops[frozenset({("channel", "0"), ("op", "read")})] == 20.0
    assert samples(text, "mpcache_channel_connections")[frozenset({("channel", "0")})] == 3.0
    # events per turn: cumulative buckets at the engine's bounds, sum = events
    b = samples(text, "mpcache_channel_events_per_turn_bucket")
    ch0 = {dict(k)["le"]: v for k, v in b.items() if ("channel", "0") in k}
    assert ch0 == {"0.0": 1.0, "1.0": 3.0, "3.0": 6.0, "7.0": 10.0, "15.0": 10.0, "31.0": 10.0,
                   "63.0": 10.0, "+Inf": 10.0}
    assert samples(text, "mpcache_channel_events_per_turn_count")[frozenset({("channel", "1")})] == 3.0
    assert samples(text, "mpcache_channel_events_per_turn_sum")[frozenset({("channel", "1")})] == 70.0
    lat = samples(text, "mpcache_command_duration_seconds_bucket")
    get = {dict(k)["le"]: v for k, v in lat.items() if ("command", "get") in k}
    assert get == {"1e-06": 5.0, "2e-06": 8.0, "4e-06": 9.0, "+Inf": 10.0}
    assert samples(text, "mpcache_command_duration_seconds_sum")[
        frozenset({("command", "set")})] == pytest.approx(7e-6)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["mpcache_command_duration_seconds"] == "histogram"
    assert types["mpcache_channel_events_per_turn"] == "histogram"
    assert "# TYPE mpcache_channel_requests_total counter" in text.splitlines()


class MisshapenEngine(FakeEngine):
    def command_latency(self):
        return [1000, 2000], {"get": ([1, 2], 10)}     # a bucket short


def test_misshapen_accessor_costs_only_its_own_series():
    text = scrape(FakeServer(MisshapenEngine({b"": GENERAL_TEXT})))
    assert samples(text, "memcached_up") == {frozenset(): 1.0}
    assert "mpcache_command_duration_seconds" not in text
    assert samples(text, "mpcache_channel_requests_total")
    assert samples(text, "memcached_version")


def test_stopped_server_is_down():
    text = scrape(FakeServer(None))
    assert text == ("# HELP memcached_up Whether the server answered stats.\n"
                    "# TYPE memcached_up gauge\nmemcached_up 0.0\n")


def test_unparsable_stats_is_down():
    text = scrape(FakeServer(FakeEngine({b"": b"STAT uptime soon\r\nEND\r\n"})))
    assert samples(text, "memcached_up") == {frozenset(): 0.0}
    assert "memcached_uptime_seconds" not in text


# ---- the embedded server ----

def test_stop_waits_for_scrapes_in_progress():
    """Scrapes hammer /metrics while the server stops: the engine is freed
    only after the last scrape that reads it, so none crashes the process,
    every scrape either completes with memcached_up 1, is refused, or (at
    most one per client, at the stop) is cut mid-reply: stop() ends open
    connections rather than wait for their clients.  The port is closed
    after stop()."""
    import http.client
    import threading

    import mpcache
    srv = mpcache.Server(port=free_port(), host=HOST, threads=2,
                         metrics_listen=f"{HOST}:{free_port()}").start()
    url = "http://%s:%d/metrics" % srv.metrics_address
    results = []
    done = threading.Event()

    def scrape_loop():
        while not done.is_set():
            try:
                status, _, body = http_get(url, timeout=5)
                results.append((status, "memcached_up 1.0" in body.decode().splitlines()))
            except http.client.HTTPException:
                results.append(("cut", None))     # a reply stop() cut short
            except OSError:
                results.append(("refused", None))

    threads = [threading.Thread(target=scrape_loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 5
        while sum(1 for r in results if r[0] == 200) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 5
        n_at_stop = len(results)
        time.sleep(0.2)
    finally:
        done.set()
        for t in threads:
            t.join()
    ok = [r for r in results if r[0] == 200]
    assert len(ok) >= 20 and all(up for _, up in ok)
    assert {r[0] for r in results} <= {200, "refused", "cut"}
    assert sum(1 for r in results if r[0] == "cut") <= len(threads)
    assert all(r[0] == "refused" for r in results[n_at_stop + 3:])
    assert srv.metrics_address is None


# ---- the command line ----

def _read_reply(conn):
    """One HTTP reply: its head, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed within the body"
        body += chunk
    return head


def test_sigterm_with_open_http_connections_exits_at_once():
    """Regression (issue 10): stop() waited for each open HTTP connection's
    read timeout, about 4 s after SIGTERM.  Whatever the clients do (keep
    their connection after a scrape, send nothing, send half a request
    line, not read their reply), the process exits 0 within 1 s."""
    srv = Mpcache(threads=2).start()
    conns = []

    def connect(rcvbuf=None):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conns.append(c)
        if rcvbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.settimeout(5)
        c.connect((HOST, srv.metrics_port))
        return c

    request = (f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n"
               "Connection: keep-alive\r\n\r\n").encode()
    try:
        try:
            for _ in range(3):
                c = connect()
                c.sendall(request)
                assert _read_reply(c).startswith(b"HTTP/1.0 200 ")
            for _ in range(3):
                connect()
            connect().sendall(b"GET /metr")
            connect(rcvbuf=1024).sendall(request)
            # Connections are accepted in order: once a later request is
            # answered, every connection above has its handler thread.
            assert http_get(srv.metrics_url)[0] == 200
            t0 = time.monotonic()
            os.kill(srv.proc.pid, signal.SIGTERM)
            try:
                rc = srv.proc.wait(5)
            except subprocess.TimeoutExpired:
                rc = None
            elapsed = time.monotonic() - t0
        finally:
            for c in conns:
                c.close()
        assert rc == 0 and elapsed < 1.0, f"status {rc} after {elapsed:.2f}s\n{srv.describe()}"
        assert "Traceback" not in srv.output()
    finally:
        srv.close()


def run_mpcache(*args):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    root = ["-u", "root"] if os.geteuid() == 0 else []
    return subprocess.run([sys.executable, "-m", "mpcache", *args, *root], env=env,
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("value", ["", "localhost", "127.0.0.1:", "127.0.0.1:70000", "[::1]",
                                   "x:y"])
def test_bad_metrics_listen_is_a_usage_error(value):
    r = run_mpcache("-p", str(free_port()), "--metrics-listen", value)
    assert r.returncode == 64, r
    assert r.stderr == (f'Invalid --metrics-listen "{value}": ADDR:PORT, [V6ADDR]:PORT or PORT\n')


def test_metrics_port_in_use_fails_start():
    busy = socket.socket()
    busy.bind((HOST, free_port()))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        r = run_mpcache("-p", str(free_port()), "-l", HOST, "--metrics-listen", f"{HOST}:{port}")
    finally:
        busy.close()
    assert r.returncode == 71, r
    assert r.stderr == f"--metrics-listen {HOST}:{port}: Address already in use\n"


def test_help_lists_the_flag():
    r = run_mpcache("-h")
    assert r.returncode == 0
    assert "    --metrics-listen=<addr:port> serve Prometheus metrics on" in r.stdout


def test_shard_lock_series():
    """One mpcache_shard_lock_{acquisitions,waits}_total series per shard (4
    per channel), counting the locks the traffic took."""
    mpc = Mpcache(threads=2, memory_mb=1024).start()
    try:
        with socket.create_connection(mpc.addr, timeout=5) as c:
            for i in range(200):
                c.sendall(b"set k%d 0 0 1\r\nx\r\n" % i)
                assert c.recv(64) == b"STORED\r\n"
        text = http_get(mpc.metrics_url)[2].decode()
        acquired = samples(text, "mpcache_shard_lock_acquisitions_total")
        waits = samples(text, "mpcache_shard_lock_waits_total")
        shards = {dict(k)["shard"] for k in acquired}
        assert shards == {str(i) for i in range(8)}
        assert {dict(k)["shard"] for k in waits} == shards
        assert sum(acquired.values()) >= 200
    finally:
        mpc.close()
