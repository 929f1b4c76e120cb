"""What a log-structured segment store would hold and hit on bench/hitmatrix.py's
cells: a simulator, its figures beside the measured memcached and mpcache ones.

    python -m bench.storesim [--configs NAME,...] [--cells a,b] [--json FILE] [--list]

The store modelled is the one docs/ARCHITECTURE.md names as the way to more
items per megabyte (Segcache, NSDI '21): items packed back to back in
segments, ITEM_OVERHEAD bytes each beyond key and value, no per-item links.

- Memory is -m bytes; segments (`seg` bytes, at least 128 KiB in the cells
  with values of up to 64 KiB) are cut from it until it is used up, then a
  segment is evicted for each one needed.
- A key belongs to one of `shards` shards (a hash of its id).  Each shard
  has, per size band, a SMALL and a MAIN log of segments, and one ghost of
  recently evicted keys (an entry per GHOST_BYTES of -m).  A set appends
  the item to its band's SMALL log, to MAIN if the key is in the ghost; an
  overwritten item's old copy stays as dead bytes.  A hit bumps the item's
  frequency (at most 3), once per multi-get.
- S3-FIFO over whole segments: a band gives up SMALL's oldest segment while
  SMALL holds `small_share` of the band's segments (or MAIN is empty), else
  MAIN's oldest.  Of a SMALL victim the items hit since their set go to
  MAIN (frequency reset), the others leave to the ghost; of a MAIN victim
  the items with frequency > 0 go back to MAIN with one less.  Copies go to
  MAIN's open segment; when that is full the victim itself becomes MAIN's
  open segment (compaction in place) and the set asks again.  With `merge`
  N > 1 a MAIN eviction takes MAIN's N oldest segments at once and keeps
  the most frequent of their items, up to one segment (Segcache's merge).
- Eviction takes from the shard that needs the segment, or from the largest
  shard when the needy one holds fewer than two.
- Size bands (`growth`, `first`): items go to bands by size, each band its
  own logs.  Which band gives up a segment (`rule`): R1 the needy band if it
  has a segment besides its open ones, else the band whose next victim is
  oldest; R2 always the oldest; R3 the oldest whose next victim has at most
  half its live items hit.  Age is counted in sets since the segment was
  created, or (`age` "written") last written.  `mix`: per-band segment
  sizes (64 KiB up to 8 KiB items, else two of the band's largest items);
  `minseg` (overrides mix): per-band segment sizes of `segmul` of the band's
  largest items in 4 KiB pages, at least `minseg` bytes.

Configurations are CONFIGS below.  The plain ones (a, b, c, d5, d20, e1,
merge4) have one band; a banded store whose cell uses one band (300 B
values) gives the plain store's figures exactly.

Left out: TTLs and expiry, deletes, any CPU or lock cost, and fragmentation
between segment sizes ("mix" cuts segments from a pool of bytes, an
allocator that never fragments).  The simulated stores keep to -m, while
memcached holds the -m 16 log-uniform cells in 27 MB of slabs (a first page
per class past -m).

Finding: plain segment logs hold 1.15x memcached's 300 B items and about
1.55x the bytes of 10-100 B values, but hit 0.65-0.99x memcached's ratio on
log-uniform 100 B-64 KiB values (a log-uniform fill holds a quarter of
memcached's items in about the same bytes).  Size bands with per-band
segment sizes and last-write age (F2R1wmix) reach 0.88-1.0x there; so a
segment store is not adopted as is.  Smaller segments for small bands
(F2R1wM16, F2R1wM32, F2R1wM16x2), fewer bands (F2f256R1wM16, F2f512R1wM16)
and one shard (F2R1wmixS1, F2R1wM16S1) all lose to F2R1wmix on the 9
log-uniform cells (geomean 0.898-0.917 vs 0.954, none >= memcached): one
shard cuts the open segments' unused bytes at -m 16 from 4.6 MB to 0.5 MB
and holds more live bytes, but fewer items (2,450 vs 3,684 at z0.7).

One process, one cell at a time, standard library only: a configuration
takes 1.5-3 minutes over the 25 cells, all 17 about half an hour (one core
of a 2-CPU machine shared with other work).
"""

import argparse
import bisect
import collections
import json
import math
import os
import sys
import time

from bench import hitmatrix

# Bytes an item takes beyond its key and value: the header docs/ARCHITECTURE.md
# lists for a segment item (client flags are zero in every cell).
ITEM_OVERHEAD = 23
ALIGN = 4
GHOST_BYTES = 512               # as mpcache's ghost: one key per 512 B of -m
FREQ_MAX = 3                    # S3-FIFO's two-bit counter
# A set whose victims keep being compacted into their own band asks this many
# times before taking its own band's victim, then this many before evicting
# without promotion (the second never reached in the recorded runs).
FALLBACK_OWN = 4
FALLBACK_NOPROMO = 32

DEFAULTS = {
    "seg": 64 << 10,        # bytes; at least 128 KiB in log-uniform and shift cells
    "shards": 8,
    "small_share": 0.10,
    "merge": 1,
    "growth": None,         # band bounds grow by this factor from `first` bytes; None: one band
    "first": None,
    "rule": "R1",
    "age": "created",       # or "written"
    "mix": False,
    "minseg": None,         # bytes; None: `seg` or mix
    "segmul": 4,            # with minseg: a segment holds this many of its band's largest items
}
F2 = {"growth": 2.0, "first": 128}
F125 = {"growth": 1.25, "first": 96}
# One row per configuration: what it changes from DEFAULTS.
CONFIGS = {
    "a": {"seg": 1 << 20},
    "b": {"seg": 256 << 10},
    "c": {},
    "d5": {"small_share": 0.05},
    "d20": {"small_share": 0.20},
    "e1": {"shards": 1},
    "merge4": {"merge": 4},
    "F2R1": F2,
    "F2R2": dict(F2, rule="R2"),
    "F2R1mix": dict(F2, mix=True),
    "F2R2mix": dict(F2, rule="R2", mix=True),
    "F125R1": F125,
    "F125R1mix": dict(F125, mix=True),
    "F2R2w": dict(F2, rule="R2", age="written"),
    "F2R2wmix": dict(F2, rule="R2", age="written", mix=True),
    "F2R1wmix": dict(F2, age="written", mix=True),
    "F2R3mix": dict(F2, rule="R3", mix=True),
    # smaller segments for small bands, fewer shards, fewer bands
    "F2R1wM16": dict(F2, age="written", minseg=16 << 10),
    "F2R1wM32": dict(F2, age="written", minseg=32 << 10),
    "F2R1wM16x2": dict(F2, age="written", minseg=16 << 10, segmul=2),
    "F2R1wmixS1": dict(F2, age="written", mix=True, shards=1),
    "F2R1wM16S1": dict(F2, age="written", minseg=16 << 10, shards=1),
    "F2f256R1wM16": dict(F2, first=256, age="written", minseg=16 << 10),
    "F2f512R1wM16": dict(F2, first=512, age="written", minseg=16 << 10),
}


def params(name):
    """The full parameters of a named configuration."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r} (known: {', '.join(CONFIGS)})")
    return dict(DEFAULTS, **CONFIGS[name])


# ---------------------------------------------------------------- sizes

def item_bytes(key, vsize):
    return (ITEM_OVERHEAD + len(hitmatrix.key_of(key)) + vsize + ALIGN - 1) // ALIGN * ALIGN


def largest_item(spec):
    sizes = {spec["sizes"], spec.get("shift_sizes", spec["sizes"])}
    return item_bytes(spec["keys"] - 1, max(hitmatrix.SIZES[s][1] for s in sizes))


def band_bounds(growth, first, top):
    """Upper bounds (inclusive) growing by `growth` from `first`, rounded up
    to 8 B as memcached's slab classes are, the last one `top`."""
    out = []
    b = first
    while b < top:
        out.append(b)
        b = max(math.ceil(b * growth / 8) * 8, b + 8)
    return out + [top]


def segment_size(spec, p, bound):
    if p["minseg"]:
        return max(p["minseg"], (p["segmul"] * bound + 4095) // 4096 * 4096)
    if p["mix"]:
        # small items share 64 KiB segments; a large band's segment holds two
        # of its largest items, in 4 KiB pages
        return 64 << 10 if bound <= 8 << 10 else max(64 << 10, (2 * bound + 4095) // 4096 * 4096)
    # A 64 KiB segment cannot hold a 64 KiB value.  The shift cell's 40 KiB
    # values would fit, but the recorded runs gave it 128 KiB too.
    if spec["sizes"] == "loguniform" or spec.get("shift_sizes"):
        return max(p["seg"], 128 << 10)
    return p["seg"]


def mix64(x):
    """splitmix64's finaliser of the key id: the shard hash."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


# ---------------------------------------------------------------- the store

class Item:
    __slots__ = ("key", "nbytes", "vsize", "freq")

    def __init__(self, key, nbytes, vsize):
        self.key = key
        self.nbytes = nbytes
        self.vsize = vsize
        self.freq = 0


class Segment:
    __slots__ = ("items", "used", "size", "born", "written")

    def __init__(self, size, now):
        self.items = []
        self.used = 0
        self.size = size
        self.born = self.written = now


class Band:
    __slots__ = ("small", "main")

    def __init__(self):
        self.small = collections.deque()    # [0] oldest, [-1] the open segment
        self.main = collections.deque()

    def nsegs(self):
        return len(self.small) + len(self.main)


class Shard:
    __slots__ = ("bands", "ghost")

    def __init__(self, nbands):
        self.bands = [Band() for _ in range(nbands)]
        self.ghost = collections.OrderedDict()

    def nsegs(self):
        return sum(b.nsegs() for b in self.bands)


class Store:
    def __init__(self, spec, p):
        top = largest_item(spec)
        bounds = band_bounds(p["growth"], p["first"], top) if p["growth"] else [top]
        self.capacity = self.pool = spec["memory"] << 20    # pool: bytes not in a segment
        self.small_share = p["small_share"]
        self.merge = p["merge"]
        self.rule = p["rule"]
        self.by_write = p["age"] == "written"
        self.bounds = bounds
        self.seg_sizes = [segment_size(spec, p, b) for b in bounds]
        self.shards = [Shard(len(bounds)) for _ in range(p["shards"])]
        self.ghost_cap = self.capacity // GHOST_BYTES // p["shards"]
        self.loc = {}                   # key id -> its live Item
        self.st = collections.Counter()
        self.now = 0                    # sets so far: segments are created only by sets

    def get(self, key):
        item = self.loc.get(key)
        if item is None:
            return False
        if item.freq < FREQ_MAX:
            item.freq += 1
        return True

    def set(self, key, vsize):
        self.now += 1
        sh = self.shards[mix64(key) % len(self.shards)]
        if key in self.loc:
            self.st["overwrites"] += 1
        item = Item(key, item_bytes(key, vsize), vsize)
        # scan and shifted keys have longer ids than the cell's largest item
        b = min(bisect.bisect_left(self.bounds, item.nbytes), len(self.bounds) - 1)
        assert item.nbytes <= self.seg_sizes[b], (item.nbytes, self.seg_sizes[b])
        band = sh.bands[b]
        if key in sh.ghost:
            del sh.ghost[key]
            self.st["ghost_hits"] += 1
            log = band.main
        else:
            log = band.small
        self.loc[key] = item
        self.append(sh, b, log, item)

    def put(self, seg, item):
        seg.items.append(item)
        seg.used += item.nbytes
        seg.written = self.now

    def append(self, sh, b, log, item):
        rounds = 0
        while True:
            if log and log[-1].used + item.nbytes <= log[-1].size:
                self.put(log[-1], item)
                return
            seg = self.obtain(sh, b, rounds)
            if seg is not None:
                log.append(seg)
                self.put(seg, item)
                return
            rounds += 1

    def obtain(self, sh, b, rounds):
        """A new segment for band b of shard sh, or None when this round's
        victim was compacted into its band (the caller looks again: its log
        may have room now)."""
        size = self.seg_sizes[b]
        while self.pool < size:
            t = sh
            if sh.nsegs() < 2:
                t = max(self.shards, key=Shard.nsegs)
                if t is not sh:
                    self.st["steals"] += 1
            bi = self.oldest_band(t) if t is not sh else self.pick(sh, b, rounds)
            nopromo = rounds >= FALLBACK_NOPROMO
            self.st["evict_no_promotion"] += nopromo
            freed = self.evict(t, t.bands[bi], nopromo)
            if freed is None:
                self.st["victim_kept_in_band"] += 1
                return None
            self.pool += freed.size
        self.pool -= size
        return Segment(size, self.now)

    # ------------------------------------------------------------ which band

    def takes_small(self, band):
        ns, nm = len(band.small), len(band.main)
        return ns and (ns >= self.small_share * (ns + nm) or not nm)

    def next_victim(self, band):
        if self.takes_small(band):
            return band.small[0]
        return band.main[0] if band.main else None

    def age(self, seg):
        return seg.written if self.by_write else seg.born

    def victims_by_age(self, sh):
        """(age, band index, segment) of each band's next victim, oldest first."""
        out = []
        for i, band in enumerate(sh.bands):
            v = self.next_victim(band)
            if v is not None:
                out.append((self.age(v), i, v))
        return sorted(out, key=lambda c: c[:2])

    def oldest_band(self, sh):
        cands = self.victims_by_age(sh)
        return cands[0][1] if cands else None

    def coldest_old_band(self, sh):
        """R3: the oldest victim with at most half its live items hit, else the oldest."""
        cands = self.victims_by_age(sh)
        for _, i, v in cands:
            live = [it for it in v.items if self.loc.get(it.key) is it]
            if 2 * sum(1 for it in live if it.freq) <= len(live):
                return i
            self.st["r3_skipped"] += 1
        return cands[0][1]

    def pick(self, sh, b, rounds):
        """The band of sh that gives up a segment for band b, by `rule`."""
        own = sh.bands[b]
        if rounds >= FALLBACK_OWN and own.nsegs():
            self.st["fallback_own"] += 1
            return b
        if self.rule == "R1" and own.nsegs() - bool(own.small) - bool(own.main) >= 1:
            self.st["pick_own"] += 1
            return b
        x = self.coldest_old_band(sh) if self.rule == "R3" else self.oldest_band(sh)
        self.st["pick_own" if x == b else "pick_other_band"] += 1
        return x

    # ------------------------------------------------------------ eviction

    def evict(self, t, band, nopromo):
        """Evicts band's next victim; the freed segment, or None when it
        became MAIN's open segment."""
        st = self.st
        from_small = self.takes_small(band)
        if from_small:
            v = band.small.popleft()
            st["victims_small"] += 1
            st["victims_small_was_tail"] += not band.small
        elif self.merge > 1 and len(band.main) > 1:
            return self.merge_main(band)
        else:
            v = band.main.popleft()
            st["victims_main"] += 1
        items, v.items, v.used = v.items, [], 0
        became_tail = False
        for item in items:
            if self.loc.get(item.key) is not item:
                continue                # an overwritten copy
            if item.freq and not nopromo:
                if from_small:
                    item.freq = 0
                    st["promoted"] += 1
                else:
                    item.freq -= 1
                    st["reinserted"] += 1
                became_tail |= self.copy_to_main(band, v, item)
            elif from_small:
                del self.loc[item.key]
                st["evicted_small"] += 1
                self.remember(t, item.key)
            else:
                del self.loc[item.key]
                st["evicted_main"] += 1
        return None if became_tail else v

    def merge_main(self, band):
        """Up to `merge` of MAIN's oldest segments (never its open one) at
        once: of their live items with frequency > 0 the most frequent
        (stable) are kept with one less, up to one segment's bytes; the
        rest leave.  The first victim is the one that may become MAIN's
        open segment; the others go back to the pool."""
        st = self.st
        victims = [band.main.popleft() for _ in range(min(self.merge, len(band.main) - 1))]
        st["victims_main"] += len(victims)
        st["merges"] += 1
        live = [it for v in victims for it in v.items if self.loc.get(it.key) is it]
        for v in victims:
            v.items, v.used = [], 0
        keep = set()
        budget = victims[0].size
        for item in sorted((it for it in live if it.freq), key=lambda it: -it.freq):
            if item.nbytes <= budget:
                keep.add(id(item))
                budget -= item.nbytes
        became_tail = False
        for item in live:
            if id(item) in keep:
                item.freq -= 1
                st["reinserted"] += 1
                became_tail |= self.copy_to_main(band, victims[0], item)
            else:
                del self.loc[item.key]
                st["evicted_main"] += 1
        free = victims[1:] if became_tail else victims
        self.pool += sum(v.size for v in free[1:])
        return free[0] if free else None

    def copy_to_main(self, band, victim, item):
        """Copies a kept item to MAIN's open segment; True if the victim had
        to become that segment."""
        main = band.main
        tail = main[-1] if main else None
        became = tail is None or (tail is not victim and tail.used + item.nbytes > tail.size)
        if became:
            main.append(victim)
            victim.born = self.now
            tail = victim
            self.st["victim_became_main_tail"] += 1
        assert tail.used + item.nbytes <= tail.size
        self.put(tail, item)
        self.st["copied_bytes"] += item.nbytes
        return became

    def remember(self, t, key):
        if key in t.ghost:
            t.ghost.move_to_end(key)
        else:
            t.ghost[key] = None
            if len(t.ghost) > self.ghost_cap:
                t.ghost.popitem(last=False)

    # ------------------------------------------------------------ accounting

    def census(self):
        """What the segments hold at the end of a cell."""
        live = nitems = vbytes = seg_bytes = nsegs = tail_unused = closed_unused = 0
        for sh in self.shards:
            for band in sh.bands:
                for log in (band.small, band.main):
                    for j, seg in enumerate(log):
                        nsegs += 1
                        seg_bytes += seg.size
                        if j == len(log) - 1:
                            tail_unused += seg.size - seg.used
                        else:
                            closed_unused += seg.size - seg.used
                        for it in seg.items:
                            if self.loc.get(it.key) is it:
                                nitems += 1
                                live += it.nbytes
                                vbytes += it.vsize
        assert nitems == len(self.loc)
        assert seg_bytes + self.pool == self.capacity
        return {"items": nitems, "value_bytes": vbytes, "live_item_bytes": live,
                "segments": nsegs, "segment_bytes": seg_bytes,
                "open_tail_unused_bytes": tail_unused, "closed_unused_bytes": closed_unused}


# ---------------------------------------------------------------- cells

def run_fill(spec, store):
    """hitmatrix.run_fill: every key set once, then read back."""
    f = hitmatrix.size_fn(spec["sizes"])
    for i in range(spec["keys"]):
        store.set(i, f(i))
    held = [store.loc[i] for i in range(spec["keys"]) if i in store.loc]
    return {"items": len(held), "value_bytes": sum(it.vsize for it in held)}


def run_aside(spec, store, seed):
    """hitmatrix.run_aside's client, with the store in place of a server."""
    def set_many(items):
        for i, size in items:
            store.set(i, size)

    gets, hits = hitmatrix.cache_aside(spec, seed, lambda ids: {i for i in ids if store.get(i)},
                                       set_many)
    return {"hit_ratio": hits / gets if gets else 0.0, "gets": gets, "hits": hits}


def run_cell(spec, p, seed=hitmatrix.SEED):
    store = Store(spec, p)
    t0 = time.monotonic()
    r = run_fill(spec, store) if spec["kind"] == "fill" else run_aside(spec, store, seed)
    r["seconds"] = round(time.monotonic() - t0, 1)
    r["bands"] = [list(b) for b in zip(store.bounds, store.seg_sizes)]
    r["census"] = store.census()
    r["stats"] = dict(store.st)
    return r


# ---------------------------------------------------------------- report

MEASURED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "hitmatrix.json")
SERVERS = ("memcached", "mpcache")


def load_measured(path):
    """cell -> {server: result} from hitmatrix's JSON; empty if there is none."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {name: c["result"] for name, c in json.load(f)["cells"].items()}


def fmt(v):
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else f"{v:,}"


def ratio(a, b):
    return a / b if a is not None and b else None


def table(name, cells, all_cells, measured):
    """One configuration's markdown table, and its aside cells' simulated/memcached ratios."""
    changes = ", ".join(f"{k}={v}" for k, v in CONFIGS[name].items()) or "the defaults"
    lines = [f"### {name}: {changes}", "",
             "| cell | memcached | mpcache | simulated | simulated/memcached "
             "| items held: memcached / mpcache / simulated |",
             "| --- | --- | --- | --- | --- | --- |"]
    ratios = {}
    for cell, r in cells.items():
        m = measured.get(cell, {})
        if all_cells[cell]["kind"] == "fill":
            figures = [("items", f"{cell} items"), ("value_bytes", f"{cell} value bytes")]
        else:
            figures = [("hit_ratio", cell)]
        for key, label in figures:
            mc, mp = (m.get(s, {}).get(key) for s in SERVERS)
            x = ratio(r[key], mc)
            held = ""
            if key == "hit_ratio":
                ratios[cell] = x
                held = " / ".join(fmt(m.get(s, {}).get("curr_items")) for s in SERVERS)
                held += f" / {r['census']['items']:,}"
            lines.append(f"| {label} | {fmt(mc)} | {fmt(mp)} | {fmt(r[key])} "
                         f"| {'-' if x is None else f'{x:.3f}'} | {held} |")
    return lines, ratios


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def summary(ratios, all_cells):
    """Geomeans of simulated/memcached hit ratio per configuration."""
    lines = ["| config | all aside cells (n) | log-uniform (n) | the others (n) "
             "| cells >= memcached | min |", "| --- | --- | --- | --- | --- | --- |"]
    for name, rs in ratios.items():
        rs = {c: x for c, x in rs.items() if x is not None}
        if not rs:
            continue
        lu = [x for c, x in rs.items() if all_cells[c]["sizes"] == "loguniform"]
        other = [x for c, x in rs.items() if all_cells[c]["sizes"] != "loguniform"]
        cols = [f"{fmt(geomean(xs))} ({len(xs)})" for xs in (list(rs.values()), lu, other)]
        lines.append(f"| {name} | " + " | ".join(cols) + f" | {sum(x >= 1 for x in rs.values())}"
                     f"/{len(rs)} | {min(rs.values()):.3f} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="", help="comma-separated config names (default: all)")
    ap.add_argument("--cells", default="", help="comma-separated cell names (default: all)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--measured", default=MEASURED, help="hitmatrix results to compare with")
    ap.add_argument("--list", action="store_true", help="list the configs and exit")
    args = ap.parse_args(argv)
    all_cells = hitmatrix.cells()
    if args.list:
        for name in CONFIGS:
            print(name, params(name))
        return 0
    chosen = [c for c in args.configs.split(",") if c] or list(CONFIGS)
    try:
        configs = {c: params(c) for c in chosen}
    except ValueError as e:
        ap.error(str(e))
    names = [c for c in args.cells.split(",") if c] or list(all_cells)
    unknown = [c for c in names if c not in all_cells]
    if unknown:
        ap.error(f"unknown cells: {', '.join(unknown)}")
    measured = load_measured(args.measured)
    print("Defaults: " + ", ".join(f"{k}={v}" for k, v in DEFAULTS.items()) + "\n")
    results = {"seed": hitmatrix.SEED, "configs": {}}
    ratios = {}
    for cname, p in configs.items():
        cells = {}
        results["configs"][cname] = {"params": p, "cells": cells}
        for name in names:
            r = cells[name] = run_cell(all_cells[name], p)
            fig = (f"hit_ratio={r['hit_ratio']:.4f}" if "hit_ratio" in r
                   else f"items={r['items']:,} value_bytes={r['value_bytes']:,}")
            print(f"  {cname} {name}: {fig} ({r['seconds']} s)", file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
        lines, ratios[cname] = table(cname, cells, all_cells, measured)
        print("\n".join(lines) + "\n", flush=True)
    geomeans = summary(ratios, all_cells)
    if len(geomeans) > 2:
        print("\n".join(["### Hit ratio simulated/memcached, geomeans", ""] + geomeans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
