"""What a cache holds and how often it hits: mpcache against memcached on the
same seeded request sequences, at the same -m (issue 14's matrix).

    python -m bench.hitmatrix [--quick] [--servers memcached,mpcache] [--cells a,b] [--json FILE]

Two kinds of cell, each run on a fresh server of each kind, both at ``-t 2``
(the default on 2 CPUs for both), nothing pinned:

- **fill**: N sets of values from a size distribution, one pass, then every
  key is read back: items held, bytes of values held (with mixed sizes which
  sizes survive is policy, so bytes held is the figure to compare), and the
  server's RSS against -m.
- **cache-aside**: a client reads a key and, on a miss, sets it (the value's
  size a function of the key); keys are drawn from a Zipf distribution,
  optionally with scans of one-time keys mixed in, or with popularity moving
  to other keys (of other sizes) halfway.  The hit ratio counts the gets of
  the second half of the sequence, after the cache has filled.

The sequence is a function of the cell and the seed alone, and the client
sends it in batches (one multi-get of up to BATCH keys, then the sets of its
misses, noreply), so both servers see the same requests in the same order
except for the sets, which follow each server's own misses.  A busy machine
changes how long a cell takes, hardly its figures; the servers' own timers
(maintenance ticks, memcached's LRU threads) move a hit ratio by up to about
0.02 between runs.

Needs memcached and the standard library only.
"""

import argparse
import bisect
import itertools
import json
import math
import os
import random
import socket
import sys
import time

from bench import compare

BATCH = 64
SEED = 14
ARRANGEMENT = {"threads": 2, "server_cpus": None, "client_cpus": None}

# ---------------------------------------------------------------- sizes


# Value sizes, smallest and largest: uniform between them, or log-uniform.
SIZES = {"fixed-300": (300, 300), "tiny": (10, 100), "small": (100, 500),
         "large": (4096, 40959), "loguniform": (100, 65535)}


def size_fn(kind):
    """key id -> value size, deterministic (a hash of the id)."""
    def h(i):
        x = (i * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        return (x * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF) / 2.0 ** 64
    least, most = SIZES[kind]
    if kind == "loguniform":
        lo, hi = math.log(least), math.log(most + 1)
        return lambda i: int(math.exp(lo + h(i) * (hi - lo)))
    return lambda i: least + int(h(i) * (most - least + 1))


def mean_size(kind, n=20000):
    f = size_fn(kind)
    return sum(f(i) for i in range(n)) / n


# ---------------------------------------------------------------- cells

def cells(quick=False):
    """name -> spec.  Key spaces are five times what -m holds, so the policy
    decides what stays; a sequence is four times its key space.  --quick
    runs the same cells at -m 16 only (fills at a quarter of the keys)."""
    out = {}
    fill_m = 16 if quick else 64
    k = 4 if quick else 1

    # fill: issue 14's "items held" figures (1M x 300 B and 2M x 10-100 B into -m 64)
    out[f"fill-300B-m{fill_m}"] = {"kind": "fill", "memory": fill_m, "keys": 1_000_000 // k,
                                   "sizes": "fixed-300"}
    out[f"fill-tiny-m{fill_m}"] = {"kind": "fill", "memory": fill_m, "keys": 2_000_000 // k,
                                   "sizes": "tiny"}
    out[f"fill-loguniform-m{fill_m}"] = {"kind": "fill", "memory": fill_m, "keys": 60_000 // k,
                                         "sizes": "loguniform"}
    # cache-aside: sizes x memory x skew
    memories = {"tiny": (16,), "fixed-300": (16, 64), "loguniform": (16, 64, 256)}
    for sizes, mems in memories.items():
        avg = mean_size(sizes) + 60          # the value and about what an item adds
        for memory in ((16,) if quick else mems):
            keys = int(memory * 1024 * 1024 / avg * 5)
            for zipf in (0.7, 0.99, 1.2):
                out[f"aside-{sizes}-m{memory}-z{zipf}"] = {
                    "kind": "aside", "memory": memory, "keys": keys, "sizes": sizes, "zipf": zipf,
                    "ops": keys * 4}
    # scans: Zipf 0.9 over 100-500 B values, and every 10,000 gets a scan of
    # 2,000 keys read once; every 100,000 gets a scan of 40,000 (about what
    # -m 16 holds); and the same keys with no scan, the most any policy can
    # hit on the scanned cells' other gets
    keys = int(16 * 1024 * 1024 / (mean_size("small") + 60) * 5)
    scanned = {"kind": "aside", "memory": 16, "keys": keys, "sizes": "small", "zipf": 0.9,
               "ops": keys * 4}
    out["scan-small-m16-z0.9"] = dict(scanned, scan_every=10_000, scan_len=2_000)
    out["scan-whole-small-m16-z0.9"] = dict(scanned, scan_every=100_000, scan_len=40_000)
    out["noscan-small-m16-z0.9"] = dict(scanned)
    # popularity moves from 100-500 B values to 4-40 KiB values halfway
    out["shift-small-to-large-m32"] = {"kind": "aside", "memory": 32, "keys": 60_000 // k,
                                       "sizes": "small", "shift_sizes": "large", "zipf": 0.99,
                                       "ops": 60_000 // k * 8}
    return out


# ---------------------------------------------------------------- client

class Client:
    def __init__(self, port):
        self.s = socket.create_connection((compare.HOST, port), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.values = {}

    def close(self):
        self.s.close()

    def _value(self, size):
        v = self.values.get(size)
        if v is None:
            v = self.values[size] = b"v" * size
        return v

    def _read_until_end(self):
        while not self.buf.endswith(b"END\r\n"):
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def multiget(self, keys):
        """{key: value size} of the keys that hit."""
        self.s.sendall(b"get " + b" ".join(keys) + b"\r\n")
        data = self._read_until_end()
        hits = {}
        pos = 0
        while True:
            if data.startswith(b"END\r\n", pos):
                return hits
            eol = data.index(b"\r\n", pos)
            head = data[pos:eol].split(b" ")
            if head[0] != b"VALUE":
                raise RuntimeError(f"unexpected reply {data[pos:eol]!r}")
            size = int(head[3])
            hits[head[1]] = size
            pos = eol + 2 + size + 2

    def set_many(self, items):
        """items: [(key, size)], noreply, one write."""
        if not items:
            return
        parts = []
        for key, size in items:
            parts.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, size, self._value(size)))
        self.s.sendall(b"".join(parts))

    def sync(self):
        """Waits until the server has processed everything sent so far."""
        self.s.sendall(b"mn\r\n")
        while not self.buf.endswith(b"MN\r\n"):
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        self.buf.clear()

    def stats(self, group=b""):
        self.s.sendall(b"stats " + group + b"\r\n" if group else b"stats\r\n")
        out = {}
        for line in self._read_until_end().decode().split("\r\n"):
            f = line.split(" ", 2)
            if len(f) == 3 and f[0] == "STAT":
                out[f[1]] = f[2]
        return out


def key_of(i):
    return b"k:%d" % i


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


# ---------------------------------------------------------------- sequences

class Zipf:
    """Ranks 0..n-1 with P(rank r) proportional to 1/(r+1)^s; rank r is key
    perm(r), so popular keys are spread over the key space."""

    def __init__(self, n, s, rng):
        self.n = n
        acc, cdf = 0.0, []
        for r in range(n):
            acc += 1.0 / (r + 1) ** s
            cdf.append(acc)
        self.cdf = [c / acc for c in cdf]
        self.rng = rng
        self.mult = 2654435761 % n or 1
        while math.gcd(self.mult, n) != 1:
            self.mult += 1

    def draw(self):
        r = bisect.bisect_left(self.cdf, self.rng.random())
        return (min(r, self.n - 1) * self.mult) % self.n


def aside_sequence(spec, seed):
    """Yields (key id, size function index) for every get of the cell."""
    rng = random.Random(seed)
    z = Zipf(spec["keys"], spec["zipf"], rng)
    ops = spec["ops"]
    scan_every = spec.get("scan_every", 0)
    scan_len = spec.get("scan_len", 0)
    one_time = spec["keys"] * 10
    shift_at = ops // 2 if spec.get("shift_sizes") else ops + 1
    for op in range(ops):
        if scan_every and op % scan_every == 0 and op:
            for _ in range(scan_len):
                one_time += 1
                yield one_time, 0
        if op < shift_at:
            yield z.draw(), 0
        else:
            # other keys (offset), other sizes
            yield spec["keys"] * 2 + z.draw(), 1


# ---------------------------------------------------------------- runs

def run_fill(server, spec):
    f = size_fn(spec["sizes"])
    c = Client(server.port)
    try:
        keys = spec["keys"]
        for start in range(0, keys, BATCH * 4):
            c.set_many([(key_of(i), f(i)) for i in range(start, min(keys, start + BATCH * 4))])
        c.sync()
        st = c.stats()
        held = held_bytes = 0
        for start in range(0, keys, BATCH * 4):
            hits = c.multiget([key_of(i) for i in range(start, min(keys, start + BATCH * 4))])
            held += len(hits)
            held_bytes += sum(hits.values())
        return {"items": held, "value_bytes": held_bytes, "curr_items": int(st["curr_items"]),
                "evictions": int(st.get("evictions", 0)), "rss_mb": round(rss_mb(server.pid), 1),
                "memory_mb": spec["memory"]}
    finally:
        c.close()


def cache_aside(spec, seed, multiget, set_many):
    """The cell's gets as a cache-aside client makes them, in batches of
    BATCH: one multi-get of the batch's distinct key ids (multiget(ids) ->
    the ids that hit), then one write setting each miss (set_many([(id,
    size)]), in batch order).  A key asked again later in the batch hits if
    it hit, or if its miss was filled in between, as for a client asking one
    by one (the sets go after the batch: nothing is evicted that early, so
    the sequence is what a sequential client makes).  Returns (gets, hits)
    of the second half of the sequence."""
    fs = [size_fn(spec["sizes"]), size_fn(spec.get("shift_sizes", spec["sizes"]))]
    measured_from = spec["ops"] // 2
    asked = gets = hits = 0
    seq = iter(aside_sequence(spec, seed))
    while batch := list(itertools.islice(seq, BATCH)):
        got = multiget(list(dict.fromkeys(i for i, _ in batch)))
        filled = {}
        for i, which in batch:
            hit = i in got or i in filled
            if asked >= measured_from:
                gets += 1
                hits += hit
            asked += 1
            if not hit:
                filled[i] = fs[which](i)
        set_many(list(filled.items()))
    return gets, hits


def run_aside(server, spec, seed):
    c = Client(server.port)
    try:
        def multiget(ids):
            got = c.multiget([key_of(i) for i in ids])
            return {i for i in ids if key_of(i) in got}

        gets, hits = cache_aside(spec, seed, multiget,
                                 lambda items: c.set_many([(key_of(i), size) for i, size in items]))
        c.sync()
        st = c.stats()
        # memcached grants each slab class its first 1 MiB page past -m
        # (slabs.c do_slabs_newslab): with values of many sizes at a small -m
        # it holds items in more memory than -m, which this shows
        slab_mb = int(c.stats(b"slabs")["total_malloced"]) / (1 << 20)
        return {"hit_ratio": hits / gets if gets else 0.0, "gets": gets,
                "curr_items": int(st["curr_items"]), "evictions": int(st.get("evictions", 0)),
                "slabs_moved": int(st.get("slabs_moved", 0)),
                "rss_mb": round(rss_mb(server.pid), 1), "memory_mb": spec["memory"],
                "slab_mb": round(slab_mb, 1)}
    finally:
        c.close()


def run_cell(name, spec, servers, ports, seed):
    out = {}
    for srv_name in servers:
        t0 = time.monotonic()
        server = compare.Server(srv_name, ports.take(), spec["memory"], ARRANGEMENT)
        try:
            r = run_fill(server, spec) if spec["kind"] == "fill" else run_aside(server, spec, seed)
            r["info"] = server.info()
        finally:
            server.stop()
        r["seconds"] = round(time.monotonic() - t0, 1)
        out[srv_name] = r
        print(f"  {name} {srv_name}: " + ", ".join(f"{k}={v}" for k, v in r.items() if k != "info"),
              flush=True)
    return out


def ratio(result, cand, ref, key):
    a, b = result[cand].get(key), result[ref].get(key)
    return a / b if a is not None and b else None


def _mb(res):
    """total_malloced at the end of a cell (results from before it was taken: -)."""
    return f"{res['slab_mb']:.0f}" if "slab_mb" in res else "-"


def markdown(results, cand, ref):
    """The tables for BENCHMARKS.md."""
    lines = [f"### Items held after filling (one pass of sets), {cand} / {ref}", "",
             "| cell | values | items held | bytes of values held | ratio (bytes) | RSS, MB (-m) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results["cells"].items():
        if r["spec"]["kind"] != "fill":
            continue
        res = r["result"]
        lines.append(
            f"| {name} | {r['spec']['sizes']} | {res[cand]['items']:,} / {res[ref]['items']:,} "
            f"| {res[cand]['value_bytes']:,} / {res[ref]['value_bytes']:,} "
            f"| {ratio(res, cand, ref, 'value_bytes'):.3f}x "
            f"| {res[cand]['rss_mb']:.0f} / {res[ref]['rss_mb']:.0f} ({r['spec']['memory']}) |")
    lines += ["", f"### Hit ratio, cache-aside, {cand} / {ref}", "",
              "| cell | keys | gets measured | hit ratio | ratio | evictions | slab memory, MB (-m) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["cells"].items():
        if r["spec"]["kind"] != "aside":
            continue
        res = r["result"]
        lines.append(
            f"| {name} | {r['spec']['keys']:,} | {res[cand]['gets']:,} "
            f"| {res[cand]['hit_ratio']:.4f} / {res[ref]['hit_ratio']:.4f} "
            f"| {ratio(res, cand, ref, 'hit_ratio'):.3f}x "
            f"| {res[cand]['evictions']:,} / {res[ref]['evictions']:,} "
            f"| {_mb(res[cand])} / {_mb(res[ref])} ({r['spec']['memory']}) |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="-m 16 only")
    ap.add_argument("--servers", default="memcached,mpcache")
    ap.add_argument("--cells", default="", help="comma-separated cell names (default: all)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--list", action="store_true", help="list the cells and exit")
    args = ap.parse_args(argv)
    all_cells = cells(args.quick)
    if args.list:
        for name, spec in all_cells.items():
            print(name, spec)
        return 0
    names = [c for c in args.cells.split(",") if c] or list(all_cells)
    unknown = [c for c in names if c not in all_cells]
    if unknown:
        ap.error(f"unknown cells: {', '.join(unknown)}")
    servers = args.servers.split(",")
    ports = compare.PortPool(compare.PORT_BASE, compare.PORT_SPAN)
    results = {"seed": args.seed, "quick": args.quick, "servers": servers,
               "machine": compare.machine_info(), "cells": {}}
    for name in names:
        spec = all_cells[name]
        print(f"{name}: {spec}", flush=True)
        results["cells"][name] = {"spec": spec, "result": run_cell(name, spec, servers, ports, args.seed)}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    if len(servers) >= 2:
        text = markdown(results, servers[1], servers[0])
        print(text)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
