"""Prometheus metrics: memcached_exporter's series, and mpcache's own.

    Prometheus ---- GET /metrics ----> MetricsServer: a Python thread in the
                                       server's process, never a channel
                                            |  at scrape time only
                                            v
        StatsCollector.collect()  --->  Engine.stats(b""), (b"settings"),
                                        (b"items"), (b"slabs"), (b"mpcache"):
                                        the bytes a client's
                                        "stats <group>" gets; the GIL
                                        is released and no lock a channel
                                        waits on is held, except each shard
                                        lock briefly for the store's totals
                                    --->  Engine.channel_stats() and
                                        Engine.command_latency(), when the
                                        engine has them (per-channel series
                                        and latency histograms)

The memcached_* series carry the names, labels and types of the Prometheus
project's memcached_exporter (v0.16), derived from the same stats keys the
way it derives them, so dashboards and alerts written for memcached work
unchanged and nobody needs to run the exporter beside mpcache (it still
works: `stats` carries memcached's names only).  The mpcache_* series show
what memcached has no words for: the MegaPipe mechanics per channel (from
"stats mpcache" and the engine's accessors; the totals' names and help come
from the engine's one list, MP_OWN_TOTALS) and server-side latency per
command.

Why our own text encoder: the exporter is a Go program and serves the
classic text format (0.0.4), where some counters have no `_total` suffix
(`memcached_uptime_seconds`, `memcached_slab_items_moves_to_cold`, ...).
prometheus_client's encoders rename every counter family to `*_total`
(and its OpenMetrics encoder, which it picks for Prometheus' Accept header,
requires the suffix), which would rename those series.  So the collector
yields prometheus_client metric families and `encode_text()` writes them
in the 0.0.4 format under the sample names they carry.
"""

import gzip
import http.server
import selectors
import socket
import socketserver
import sys
import threading

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from . import __version__
from .config import parse_metrics_listen
from .log import logger

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A client that has not sent its request line by then is dropped, so a
# stuck connection does not hold a handler thread for ever.  stop() does
# not wait for it: it cuts every open connection.
REQUEST_TIMEOUT = 5.0


def turn_hist_bounds(nbuckets):
    """Upper bounds of the engine's events-per-turn histogram
    (Engine.channel_stats()["turn_hist"]): bucket 0 holds turns with no
    event, bucket b turns with 2^(b-1) <= n < 2^b events, the last one the
    rest.  Eight buckets: 0, 1, 3, 7, 15, 31, 63, +Inf."""
    return [0] + [2 ** b - 1 for b in range(1, nbuckets - 1)]


# mp_thread_stats' syscall_* fields count I/O operations by kind: on epoll
# each is a system call, on io_uring each is a submission batched into the
# loop's one io_uring_enter per turn (which `syscalls` counts).
IO_OPERATIONS = ("wait", "read", "write", "accept", "close", "ctl")


# ---- the stats text, split as memcached_exporter's client splits it ----

class Stats:
    """One scrape's worth of stats, as strings.

    general:  "stats" lines, plus the colon-less lines of "stats slabs"
              (active_slabs, total_malloced)
    slabs:    {class: {key: value}} from "stats slabs" ("STAT 1:chunk_size 96")
    items:    {class: {key: value}} from "stats items" ("STAT items:1:number 5")
    settings: "stats settings"
    """

    def __init__(self):
        self.general = {}
        self.slabs = {}
        self.items = {}
        self.settings = {}

    def add(self, text, settings=False):
        for line in text.decode("utf-8", "replace").split("\r\n"):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != "STAT":
                continue
            key, value = parts[1], parts[2]
            if settings:
                self.settings[key] = value
                continue
            fields = key.split(":")
            if len(fields) == 1:
                self.general[key] = value
            elif len(fields) == 2:
                self.slabs.setdefault(int(fields[0]), {})[fields[1]] = value
            elif len(fields) == 3:
                self.items.setdefault(int(fields[1]), {})[fields[2]] = value


def read_stats(engine):
    st = Stats()
    st.add(engine.stats(b""))
    st.add(engine.stats(b"slabs"))
    st.add(engine.stats(b"items"))
    st.add(engine.stats(b"settings"), settings=True)
    return st


def _timeval(value):
    # "rusage_user 1.234567": seconds and microseconds
    sec, _, usec = value.partition(".")
    return int(sec) + int(usec or 0) / 1e6


def _yesno(value):
    if value not in ("yes", "no"):
        raise ValueError(f"not a yes/no value: {value!r}")
    return 1.0 if value == "yes" else 0.0


# ---- memcached_exporter's series ----
#
# Rows: (stats key, metric name, type, help).  Counters are written under
# exactly the name given, with or without `_total`, as the exporter does.
# A key the server does not print yields no series (the exporter's rule).

GENERAL = [
    ("uptime", "memcached_uptime_seconds", "counter", "Seconds since the server started."),
    ("time", "memcached_time_seconds", "gauge", "The server's current UNIX time."),
    ("bytes", "memcached_current_bytes", "gauge", "Bytes used by stored items."),
    ("limit_maxbytes", "memcached_limit_bytes", "gauge", "Bytes the server may use for items (-m)."),
    ("curr_items", "memcached_current_items", "gauge", "Items stored now."),
    ("total_items", "memcached_items_total", "counter", "Items stored since the server started."),
    ("bytes_read", "memcached_read_bytes_total", "counter", "Bytes read from the network."),
    ("bytes_written", "memcached_written_bytes_total", "counter", "Bytes sent to the network."),
    ("curr_connections", "memcached_current_connections", "gauge", "Open client connections."),
    ("total_connections", "memcached_connections_total", "counter",
     "Connections opened since the server started."),
    ("rejected_connections", "memcached_connections_rejected_total", "counter",
     "Connections closed at once for being over the -c limit."),
    ("conn_yields", "memcached_connections_yielded_total", "counter",
     "Times a connection gave up its turn after -R requests."),
    ("listen_disabled_num", "memcached_connections_listener_disabled_total", "counter",
     "Times the connection limit stopped accepting."),
    ("evictions", "memcached_items_evicted_total", "counter",
     "Unexpired items removed to make room for new ones."),
    ("reclaimed", "memcached_items_reclaimed_total", "counter",
     "Items stored in memory taken from an expired item."),
    ("store_too_large", "memcached_item_too_large_total", "counter",
     "Stores refused for being over the item size limit (-I)."),
    ("store_no_memory", "memcached_item_no_memory_total", "counter",
     "Stores refused for lack of memory."),
    ("lru_crawler_starts", "memcached_lru_crawler_starts_total", "counter",
     "LRU crawler runs started."),
    ("direct_reclaims", "memcached_direct_reclaims_total", "counter",
     "Times a worker had to reclaim or evict items itself."),
    ("crawler_items_checked", "memcached_lru_crawler_items_checked_total", "counter",
     "Items the LRU crawler examined."),
    ("crawler_reclaimed", "memcached_lru_crawler_reclaimed_total", "counter",
     "Items the LRU crawler freed."),
    ("moves_to_cold", "memcached_lru_crawler_moves_to_cold_total", "counter",
     "Items moved from HOT or WARM to COLD."),
    ("moves_to_warm", "memcached_lru_crawler_moves_to_warm_total", "counter",
     "Items moved from COLD to WARM."),
    ("moves_within_lru", "memcached_lru_crawler_moves_within_lru_total", "counter",
     "Items bumped within HOT or WARM."),
    ("total_malloced", "memcached_malloced_bytes", "gauge", "Bytes of slab pages allocated."),
    ("accepting_conns", "memcached_accepting_connections", "gauge",
     "1 while the server accepts new connections."),
]

# The exporter reads these from "stats settings" only while lru_crawler is "yes".
LRU_SETTINGS = [
    ("lru_crawler", "memcached_lru_crawler_enabled", "Whether the LRU crawler is enabled.", _yesno),
    ("lru_crawler_sleep", "memcached_lru_crawler_sleep", "Microseconds between LRU crawls.", float),
    ("lru_crawler_tocrawl", "memcached_lru_crawler_to_crawl", "Items crawled per class per run.",
     float),
    ("lru_maintainer_thread", "memcached_lru_crawler_maintainer_thread",
     "Whether the segmented LRU's maintainer runs.", _yesno),
    ("hot_lru_pct", "memcached_lru_crawler_hot_percent", "Percent of a class's memory for HOT.",
     float),
    ("warm_lru_pct", "memcached_lru_crawler_warm_percent", "Percent of a class's memory for WARM.",
     float),
    ("hot_max_factor", "memcached_lru_crawler_hot_max_factor",
     "HOT idle age limit as a factor of COLD's age.", float),
    ("warm_max_factor", "memcached_lru_crawler_warm_max_factor",
     "WARM idle age limit as a factor of COLD's age.", float),
]

# "stats items", per slab class.
ITEMS = [
    ("number", "memcached_slab_current_items", "gauge", "Items stored in the class."),
    ("age", "memcached_slab_items_age_seconds", "gauge", "Age of the class's oldest item."),
    ("crawler_reclaimed", "memcached_slab_items_crawler_reclaimed_total", "counter",
     "Items of the class the LRU crawler freed."),
    ("evicted", "memcached_slab_items_evicted_total", "counter",
     "Items of the class evicted before they expired."),
    ("evicted_nonzero", "memcached_slab_items_evicted_nonzero_total", "counter",
     "Items with an expiry time evicted before they expired."),
    ("evicted_time", "memcached_slab_items_evicted_time_seconds", "counter",
     "Seconds since the last access of the class's last evicted item."),
    ("evicted_unfetched", "memcached_slab_items_evicted_unfetched_total", "counter",
     "Items evicted without ever being fetched."),
    ("expired_unfetched", "memcached_slab_items_expired_unfetched_total", "counter",
     "Items expired without ever being fetched."),
    ("outofmemory", "memcached_slab_items_outofmemory_total", "counter",
     "Stores in the class that failed for lack of memory."),
    ("reclaimed", "memcached_slab_items_reclaimed_total", "counter",
     "Stores in the class that reused an expired item's memory."),
    ("tailrepairs", "memcached_slab_items_tailrepairs_total", "counter",
     "Times the class's LRU tail needed repairing."),
    ("mem_requested", "memcached_slab_mem_requested_bytes", "counter",
     "Bytes the class's items take (key, value and header)."),
    ("moves_to_cold", "memcached_slab_items_moves_to_cold", "counter",
     "Items of the class moved from HOT or WARM to COLD."),
    ("moves_to_warm", "memcached_slab_items_moves_to_warm", "counter",
     "Items of the class moved from COLD to WARM."),
    ("moves_within_lru", "memcached_slab_items_moves_within_lru", "counter",
     "Items of the class bumped within HOT or WARM."),
    ("number_hot", "memcached_slab_hot_items", "gauge", "Items in the class's HOT LRU."),
    ("number_warm", "memcached_slab_warm_items", "gauge", "Items in the class's WARM LRU."),
    ("number_cold", "memcached_slab_cold_items", "gauge", "Items in the class's COLD LRU."),
    ("number_temp", "memcached_slab_temporary_items", "gauge",
     "Items in the class's TEMPORARY LRU."),
    ("age_hot", "memcached_slab_hot_age_seconds", "gauge", "Age of the oldest item in HOT."),
    ("age_warm", "memcached_slab_warm_age_seconds", "gauge", "Age of the oldest item in WARM."),
]

ITEM_LRU_HITS = [("hits_to_hot", "hot"), ("hits_to_warm", "warm"), ("hits_to_cold", "cold"),
                 ("hits_to_temp", "temporary")]

# "stats slabs", per slab class.
SLABS = [
    ("chunk_size", "memcached_slab_chunk_size_bytes", "Bytes per chunk in the class."),
    ("chunks_per_page", "memcached_slab_chunks_per_page", "Chunks per page in the class."),
    ("total_pages", "memcached_slab_current_pages", "Pages given to the class."),
    ("total_chunks", "memcached_slab_current_chunks", "Chunks in the class's pages."),
    ("used_chunks", "memcached_slab_chunks_used", "Chunks holding an item."),
    ("free_chunks", "memcached_slab_chunks_free", "Chunks free for an item."),
    ("free_chunks_end", "memcached_slab_chunks_free_end", "Free chunks at the end of the last page."),
]

HIT_MISS_COMMANDS = ("get", "delete", "incr", "decr", "cas", "touch")
SLAB_HIT_COMMANDS = HIT_MISS_COMMANDS


class _Families:
    """Metric families of one scrape, by name, in first-use order."""

    def __init__(self):
        self.by_name = {}

    def get(self, name, typ, doc):
        fam = self.by_name.get(name)
        if fam is None:
            fam = Metric(name, doc, typ)
            self.by_name[name] = fam
        return fam

    def add(self, name, typ, doc, value, labels=None):
        labels = labels or {}
        self.get(name, typ, doc).add_sample(name, labels, float(value))

    def __iter__(self):
        return iter(self.by_name.values())


def exporter_families(st):
    """memcached_exporter's series from one scrape's stats.  Raises
    ValueError when a value does not parse (the exporter's memcached_up 0)."""
    f = _Families()
    g = st.general
    if "version" in g:
        f.add("memcached_version", "gauge", "The version of the server.", 1,
              {"version": g["version"]})
    commands = "Requests by command and outcome."
    for op in HIT_MISS_COMMANDS:
        for key, status in ((op + "_hits", "hit"), (op + "_misses", "miss")):
            if key in g:
                f.add("memcached_commands_total", "counter", commands, float(g[key]),
                      {"command": op, "status": status})
    if "cas_badval" in g:
        f.add("memcached_commands_total", "counter", commands, float(g["cas_badval"]),
              {"command": "cas", "status": "badval"})
    if "cmd_flush" in g:
        f.add("memcached_commands_total", "counter", commands, float(g["cmd_flush"]),
              {"command": "flush", "status": "hit"})
    if "cmd_set" in g:
        # cmd_set counts cas requests as well; the exporter takes them out.
        cas = sum(float(g[k]) for k in ("cas_misses", "cas_hits", "cas_badval"))
        f.add("memcached_commands_total", "counter", commands, float(g["cmd_set"]) - cas,
              {"command": "set", "status": "hit"})
    for key, name, doc in (("rusage_user", "memcached_process_user_cpu_seconds_total",
                            "User CPU time of the server process."),
                           ("rusage_system", "memcached_process_system_cpu_seconds_total",
                            "System CPU time of the server process.")):
        if key in g:
            f.add(name, "counter", doc, _timeval(g[key]))
    for key, name, typ, doc in GENERAL:
        if key in g:
            f.add(name, typ, doc, float(g[key]))
    for slab, u in sorted(st.items.items()):
        lab = {"slab": str(slab)}
        for key, name, typ, doc in ITEMS:
            if key in u:
                f.add(name, typ, doc, float(u[key]), lab)
        for key, lru in ITEM_LRU_HITS:
            if key in u:
                f.add("memcached_slab_lru_hits_total", "counter", "Hits by LRU segment.",
                      float(u[key]), {"slab": str(slab), "lru": lru})
    slab_commands = "Requests by slab class, command and outcome."
    for slab, v in sorted(st.slabs.items()):
        lab = {"slab": str(slab)}
        for op in SLAB_HIT_COMMANDS:
            if op + "_hits" in v:
                f.add("memcached_slab_commands_total", "counter", slab_commands,
                      float(v[op + "_hits"]), {"slab": str(slab), "command": op, "status": "hit"})
        if "cas_badval" in v:
            f.add("memcached_slab_commands_total", "counter", slab_commands,
                  float(v["cas_badval"]), {"slab": str(slab), "command": "cas", "status": "badval"})
        if "cmd_set" in v:
            cas = sum(float(v[k]) for k in ("cas_hits", "cas_badval"))
            f.add("memcached_slab_commands_total", "counter", slab_commands,
                  float(v["cmd_set"]) - cas, {"slab": str(slab), "command": "set", "status": "hit"})
        for key, name, doc in SLABS:
            if key in v:
                f.add(name, "gauge", doc, float(v[key]), lab)
    s = st.settings
    if "maxconns" in s:
        f.add("memcached_max_connections", "gauge", "Connections allowed at once (-c).",
              float(s["maxconns"]))
    if s.get("lru_crawler") == "yes":
        for key, name, doc, conv in LRU_SETTINGS:
            if key in s:
                f.add(name, "gauge", doc, conv(s[key]))
    return f


# ---- mpcache's own series ----

def own_totals():
    """mpcache's own totals, (name, help) from the engine's one list
    (MP_OWN_TOTALS in ext/stats.h): "stats mpcache" shows mpcache_<name>,
    /metrics serves mpcache_<name>_total, summed from the channels' raw
    counters (channel_stats()), which "stats reset" does not move."""
    from ._engine import own_totals as engine_totals
    return engine_totals()


# Engine.channel_stats() field -> (metric, help); one series per channel.
CHANNEL_COUNTERS = [
    ("requests", "mpcache_channel_requests_total", "Requests executed by the channel."),
    ("syscalls", "mpcache_channel_syscalls_total", "System calls made by the channel's loop."),
    ("loop_turns", "mpcache_channel_loop_turns_total", "The channel's event loop turns."),
    ("events", "mpcache_channel_events_total",
     "Events or completions the channel handled."),
    ("accepts", "mpcache_channel_accepts_total",
     "Connections accepted on the channel's listener partition."),
    ("sqes", "mpcache_channel_sqes_total",
     "io_uring submissions queued by the channel (0 on epoll)."),
    ("bytes_read", "mpcache_channel_read_bytes_total", "Bytes the channel read."),
    ("bytes_written", "mpcache_channel_written_bytes_total", "Bytes the channel sent."),
    ("input_pauses", "mpcache_channel_input_pauses_total",
     "Times flow control stopped receiving from a connection with unprocessed input."),
    ("output_stalls", "mpcache_channel_output_stalls_total",
     "Times a connection stopped at the output mark until its client read."),
    ("idle_kicks", "mpcache_channel_idle_kicks_total",
     "Connections closed by -o idle_timeout."),
    ("malloc_fails", "mpcache_channel_malloc_fails_total",
     "Allocations that failed (a reply culled or a connection closed for it)."),
]


def mpcache_families(engine, st):
    """mpcache's own series: what "stats mpcache" says (the engine in use,
    the channels) and what the engine's accessors give, when it has them."""
    f = _Families()
    own = Stats()
    try:
        own.add(engine.stats(b"mpcache"))
    except KeyError:
        pass   # an engine without the group: its series are left out
    g = own.general
    f.add("mpcache_info", "gauge", "mpcache's version and the I/O engine in use.", 1,
          {"version": __version__, "io_engine": g.get("mpcache_io_engine", "unknown")})
    if "mpcache_channels" in g:
        f.add("mpcache_channels", "gauge", "Channels (threads with their own event loop).",
              float(g["mpcache_channels"]))
    # The engine's own accessors, where it has them.  A shape this module
    # does not expect costs those series only, never the exporter's.
    for accessor, add in (("channel_stats", _channel_families),
                          ("shard_locks", _shard_lock_families),
                          ("command_latency", _latency_family)):
        read = getattr(engine, accessor, None)
        if read is None:
            continue
        part = _Families()
        try:
            add(part, read())
        except (ValueError, KeyError, TypeError) as e:
            logger.error("metrics: unexpected Engine.%s(): %s", accessor, e)
            continue
        f.by_name.update(part.by_name)
    return f


def _total_families(f, channels):
    for name, doc in own_totals():
        if any(name in ch for ch in channels):
            f.add(f"mpcache_{name}_total", "counter", doc,
                  sum(ch.get(name, 0) for ch in channels))


def _channel_families(f, channels):
    _total_families(f, channels)
    for i, ch in enumerate(channels):
        lab = {"channel": str(i)}
        for key, name, doc in CHANNEL_COUNTERS:
            if key in ch:
                f.add(name, "counter", doc, ch[key], lab)
        for op in IO_OPERATIONS:
            key = "syscall_" + op
            if key in ch:
                f.add("mpcache_channel_io_operations_total", "counter",
                      "I/O operations by kind: each a system call on epoll, a batched "
                      "submission on io_uring.", ch[key], {"channel": str(i), "op": op})
        if "open_conns" in ch:
            f.add("mpcache_channel_connections", "gauge", "Connections open on the channel.",
                  ch["open_conns"], lab)
        for kind, n in sorted(ch.get("buffer_bytes", {}).items()):
            f.add("mpcache_channel_buffer_bytes", "gauge",
                  "Bytes of connection buffers the channel holds, by kind: input and output "
                  "held by connections, spare in its pool, the engine's receive area.",
                  n, {"channel": str(i), "kind": kind})
        hist = ch.get("turn_hist")
        if hist:
            _histogram(f, "mpcache_channel_events_per_turn",
                       "Events or completions handled per loop turn (the batch size).",
                       lab, turn_hist_bounds(len(hist)), hist, ch.get("events", 0))


def _shard_lock_families(f, shards):
    for i, (acquires, waits) in enumerate(shards):
        lab = {"shard": str(i)}
        f.add("mpcache_shard_lock_acquisitions_total", "counter",
              "Times the shard's lock was taken (any channel serves any key).", acquires, lab)
        f.add("mpcache_shard_lock_waits_total", "counter",
              "Times a channel found the shard's lock held and waited for it.", waits, lab)


def _latency_family(f, latency):
    """Engine.command_latency() -> (bounds_ns, {command: (counts, sum_ns)}):
    the histogram's upper bounds in nanoseconds, and per command word its
    counts per bucket (not cumulative, one more than bounds: the last is
    above every bound) and the sum of the observed times, all channels
    summed."""
    bounds_ns, per_command = latency
    bounds = [b / 1e9 for b in bounds_ns]
    for command, (counts, sum_ns) in sorted(per_command.items()):
        _histogram(f, "mpcache_command_duration_seconds",
                   "Server-side time per request, from parsed to reply queued.",
                   {"command": command}, bounds, counts, sum_ns / 1e9)


def _histogram(f, name, doc, labels, bounds, counts, total):
    """counts[i]: observations in (bounds[i-1], bounds[i]], the last one
    above every bound; written cumulative as Prometheus wants them."""
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{name}: {len(counts)} buckets for {len(bounds)} bounds")
    fam = f.get(name, "histogram", doc)
    acc = 0
    for bound, n in zip(list(bounds) + [float("inf")], counts):
        acc += n
        fam.add_sample(name + "_bucket", dict(labels, le=floatToGoString(bound)), float(acc))
    fam.add_sample(name + "_sum", dict(labels), float(total))
    fam.add_sample(name + "_count", dict(labels), float(acc))


class StatsCollector:
    """A prometheus_client collector over a running mpcache.Server: it reads
    the engine's stats when Prometheus scrapes, and keeps nothing between
    scrapes."""

    def __init__(self, server):
        self._server = server

    def collect(self):
        # Server.stop() stops the metrics thread (and waits for a scrape in
        # progress) before it frees the engine, so the engine seen here
        # stays valid for the whole scrape.
        engine = self._server._engine
        up = 0.0
        families = []
        if engine is not None:
            try:
                st = read_stats(engine)
                families = list(exporter_families(st)) + list(mpcache_families(engine, st))
                up = 1.0
            except (ValueError, KeyError, OSError) as e:
                logger.warning("metrics: cannot read the engine's stats: %s", e)
                families = []
        yield from families
        up_family = GaugeMetricFamily("memcached_up", "Whether the server answered stats.")
        up_family.add_metric([], up)
        yield up_family


def encode_text(registry):
    """The registry's metrics in the text format 0.0.4, each family under
    the name its samples carry (see the module docstring)."""
    out = []
    for fam in registry.collect():
        samples = [s for s in fam.samples if not s.name.endswith("_created")]
        if not samples:
            continue   # as the Go client: a family without samples is not written
        typ = {"unknown": "untyped", "info": "gauge", "stateset": "gauge",
               "gaugehistogram": "histogram"}.get(fam.type, fam.type)
        name = fam.name
        if fam.type == "counter" and all(s.name == name + "_total" for s in samples):
            name += "_total"
        elif fam.type == "info":
            name += "_info"
        doc = fam.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {typ}\n")
        for s in samples:
            if s.labels:
                labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(s.labels.items()))
                out.append(f"{s.name}{{{labels}}} {floatToGoString(s.value)}\n")
            else:
                out.append(f"{s.name} {floatToGoString(s.value)}\n")
    return "".join(out).encode("utf-8")


def _escape_label(v):
    return str(v).replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def make_registry(server, process=True):
    """The registry /metrics serves: the stats collector and, for the
    daemon, prometheus_client's process_* collector (memory, CPU, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(server))
    if process:
        ProcessCollector(registry=registry)
    return registry


# ---- the HTTP server ----

LANDING_PAGE = b"""<html><head><title>mpcache</title></head><body>
<h1>mpcache</h1><p><a href="/metrics">Metrics</a></p></body></html>
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT
    server_version = f"mpcache/{__version__}"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = encode_text(self.server.registry)
            except Exception as e:   # a scrape error must not take the thread down
                logger.error("metrics: scrape failed: %s", e)
                self._reply(500, b"scrape failed\n", "text/plain; charset=utf-8")
                return
            gz = "gzip" in self.headers.get("Accept-Encoding", "")
            self._reply(200, gzip.compress(body) if gz else body, CONTENT_TYPE,
                        {"Content-Encoding": "gzip"} if gz else None)
        elif path == "/":
            self._reply(200, LANDING_PAGE, "text/html; charset=utf-8")
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self):
        self._head_only = True
        self.do_GET()

    def _reply(self, code, body, ctype, extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not getattr(self, "_head_only", False):
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        logger.debug("metrics: %s %s", self.address_string(), fmt % args)


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    # Non-daemon handler threads that server_close() joins: stop() returns
    # only when no scrape is reading the engine any more.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    # MetricsServer's loop calls handle_request() only once the listening
    # socket is readable; a timeout of 0 keeps it from waiting again.
    timeout = 0

    def server_bind(self):
        # HTTPServer's own looks the host name up (getfqdn), which can hang
        # on a machine without DNS; the name is only used in error pages.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self._conns = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        # Closed under the lock, so cut_connections() never shuts down a
        # descriptor number that a close here has already given back.
        with self._conns_lock:
            self._conns.discard(request)
            super().shutdown_request(request)

    def cut_connections(self):
        """Ends every open connection now, whatever its client does: a
        handler blocked reading an idle or half-sent request sees EOF, one
        blocked writing to a client that does not read gets EPIPE."""
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass   # the client has reset it already

    def handle_error(self, request, client_address):
        # socketserver prints a traceback to stderr for any exception; a
        # client that goes away (or a connection stop() cut) is routine.
        e = sys.exc_info()[1]
        if isinstance(e, OSError):
            logger.debug("metrics: %s: %s", client_address[0], e)
        else:
            logger.error("metrics: request from %s failed", client_address[0], exc_info=True)


class MetricsServer:
    """The /metrics endpoint of one mpcache.Server: bind() with the
    listening sockets (before privileges are dropped), start() once the
    engine runs, stop() before the engine is freed."""

    def __init__(self, server, listen):
        self.listen = listen
        self.host, self.port = parse_metrics_listen(listen)
        self.registry = make_registry(server)
        self._httpd = None
        self._thread = None
        self._wake_r = self._wake_w = None

    @property
    def address(self):
        """(host, port) actually bound (port 0 resolved)."""
        if self._httpd is None:
            return None
        return self._httpd.server_address[:2]

    def bind(self):
        from .server import ListenError
        try:
            infos = socket.getaddrinfo(self.host or None, self.port, socket.AF_UNSPEC,
                                       socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise ListenError(f"--metrics-listen {self.listen}: {e.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        cls = type("_HTTPServer", (_HTTPServer,), {"address_family": family})
        httpd = cls(sockaddr, _Handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6:
                httpd.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            httpd.server_bind()
            httpd.server_activate()
        except OSError as e:
            httpd.server_close()
            raise ListenError(f"--metrics-listen {self.listen}: {e.strerror}") from None
        httpd.registry = self.registry
        self._httpd = httpd
        return self

    def start(self):
        if self._httpd is None:
            self.bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, args=(self._httpd, self._wake_r),
                                        name="mpcache-metrics", daemon=True)
        self._thread.start()
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        logger.info("mpcache: metrics on http://%s:%d/metrics", shown, port)
        return self

    @staticmethod
    def _serve(httpd, wake_r):
        # serve_forever() would notice shutdown() only at its next poll
        # interval; a wake-up socket ends this loop at once.
        with selectors.DefaultSelector() as sel:
            sel.register(httpd.socket, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            while True:
                ready = sel.select()
                if any(key.fileobj is wake_r for key, _ in ready):
                    return
                httpd.handle_request()

    def stop(self):
        """Returns at once whatever the HTTP clients do, after a scrape in
        progress has finished reading the engine."""
        if self._httpd is None:
            return
        if self._thread is not None:
            self._wake_w.send(b"x")
            self._thread.join()
            self._thread = None
            for sock in (self._wake_r, self._wake_w):
                sock.close()
            self._wake_r = self._wake_w = None
        self._httpd.cut_connections()
        self._httpd.server_close()
        self._httpd = None
