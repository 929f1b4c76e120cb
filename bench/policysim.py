"""What an eviction policy alone hits on bench/hitmatrix.py's cache-aside
cells, given a number of items instead of memory: the bound a store holding
that many items can reach with that policy, whatever its classes and slabs.

    python -m bench.policysim CELL ITEMS [--policy lru|s3|lfu] [--seed N]
    python -m bench.policysim CELL --memory MB [--overhead BYTES] [--policy ...]

- lru: one LRU list over all keys.
- s3: one S3-FIFO (Yang et al., SOSP 2023) over all keys: a small FIFO of
  10% of ITEMS, a main FIFO, a ghost of ITEMS keys, access counts up to 3
  (what ext/store/evict.c does per class and shard).
- lfu: keeps the keys asked most often since the sequence began, counting
  every get, hit or miss: what no online policy knows, the long-run
  popularity of each key.  On cells whose popularity does not change it is
  a ceiling for every policy that does not know the future.

With --memory the budget is bytes, not items: a key costs its value's size
(the cell's size function) plus --overhead, and lfu keeps the keys asked
most per byte, so it holds more small values where popularity does not
depend on size.

The sequence and the client's batches are hitmatrix's (cache_aside), so the
figure compares with the cell's measured hit ratios.  Standard library only.
"""

import argparse
import collections
import heapq

from bench import hitmatrix


def one(_k):
    return 1


class LRU:
    def __init__(self, cap, cost=one):
        self.cap, self.cost, self.used = cap, cost, 0
        self.keys = collections.OrderedDict()

    def get(self, k):
        if k in self.keys:
            self.keys.move_to_end(k)
            return True
        return False

    def set(self, k):
        if k not in self.keys:
            self.used += self.cost(k)
        self.keys[k] = True
        self.keys.move_to_end(k)
        while self.used > self.cap:
            self.used -= self.cost(self.keys.popitem(last=False)[0])


class S3FIFO:
    SMALL_SHARE = 0.10
    FREQ_MAX = 3

    def __init__(self, cap, cost=one):
        self.cap, self.cost = cap, cost
        self.small_cap = max(1, int(cap * self.SMALL_SHARE))
        self.small, self.main = collections.OrderedDict(), collections.OrderedDict()
        self.ghost = collections.OrderedDict()
        self.freq = {}
        self.used = self.small_used = self.ghost_used = 0

    def get(self, k):
        if k in self.freq:
            self.freq[k] = min(self.FREQ_MAX, self.freq[k] + 1)
            return True
        return False

    def _evict_one(self):
        while True:
            if self.small_used >= self.small_cap or not self.main:
                k, _ = self.small.popitem(last=False)
                c = self.cost(k)
                self.small_used -= c
                if self.freq[k] > 0:
                    self.main[k] = True      # read while small: to main
                    continue
                del self.freq[k]
                self.used -= c
                self.ghost[k] = True
                self.ghost_used += c
                while self.ghost_used > self.cap:
                    self.ghost_used -= self.cost(self.ghost.popitem(last=False)[0])
                return
            k, _ = self.main.popitem(last=False)
            if self.freq[k] > 0:
                self.freq[k] -= 1
                self.main[k] = True
                continue
            del self.freq[k]
            self.used -= self.cost(k)
            return

    def set(self, k):
        if k in self.freq:
            return
        c = self.cost(k)
        while self.freq and self.used + c > self.cap:
            self._evict_one()
        self.freq[k] = 0
        self.used += c
        if self.ghost.pop(k, None):
            self.ghost_used -= c
            self.main[k] = True
        else:
            self.small[k] = True
            self.small_used += c


class LFU:
    """The keys asked most since the start (per unit of cost) stay; a heap
    of (score, key) with stale entries skipped when popped."""

    def __init__(self, cap, cost=one):
        self.cap, self.cost, self.used = cap, cost, 0
        self.asked = collections.Counter()
        self.held, self.heap = set(), []

    def score(self, k):
        return self.asked[k] / self.cost(k)

    def get(self, k):
        self.asked[k] += 1
        return k in self.held

    def set(self, k):
        if k in self.held:
            return
        self.held.add(k)
        self.used += self.cost(k)
        heapq.heappush(self.heap, (self.score(k), k))
        while self.used > self.cap:
            s, v = heapq.heappop(self.heap)
            if v not in self.held:
                continue
            if s != self.score(v):          # asked since it was pushed
                heapq.heappush(self.heap, (self.score(v), v))
                continue
            self.held.discard(v)
            self.used -= self.cost(v)


POLICIES = {"lru": LRU, "s3": S3FIFO, "lfu": LFU}


def hit_ratio(cell, capacity, policy="s3", seed=hitmatrix.SEED, overhead=None):
    """The cell's hit ratio over `capacity` items, or bytes when `overhead`
    (bytes a key costs beyond its value) is given."""
    spec = hitmatrix.cells()[cell]
    sizes = {}
    cost = one if overhead is None else (lambda k: sizes[k] + overhead)
    cache = POLICIES[policy](capacity, cost)

    def multiget(ids):
        return {i for i in ids if cache.get(i)}

    def set_many(pairs):
        for i, size in pairs:
            sizes[i] = size
            cache.set(i)

    gets, hits = hitmatrix.cache_aside(spec, seed, multiget, set_many)
    return hits / gets if gets else 0.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cell")
    ap.add_argument("items", type=int, nargs="?")
    ap.add_argument("--memory", type=float, help="a budget of MB instead of items")
    ap.add_argument("--overhead", type=int, default=43,
                    help="bytes a key costs beyond its value, with --memory "
                         "(43: mpcache's 300-byte value in a 343-byte item)")
    ap.add_argument("--policy", choices=sorted(POLICIES), default="s3")
    ap.add_argument("--seed", type=int, default=hitmatrix.SEED)
    a = ap.parse_args(argv)
    if (a.items is None) == (a.memory is None):
        ap.error("give ITEMS or --memory")
    if a.memory is None:
        what, r = f"{a.items} items", hit_ratio(a.cell, a.items, a.policy, a.seed)
    else:
        what = f"{a.memory:g} MB at {a.overhead} bytes a key"
        r = hit_ratio(a.cell, int(a.memory * (1 << 20)), a.policy, a.seed, a.overhead)
    print(f"{a.cell} {a.policy} {what}: hit ratio {r:.4f}")


if __name__ == "__main__":
    main()
