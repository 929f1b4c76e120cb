"""What an eviction policy alone hits on bench/hitmatrix.py's cache-aside
cells, given a number of items instead of memory: the bound a store holding
that many items can reach with that policy, whatever its classes and slabs.

    python -m bench.policysim CELL ITEMS [--policy lru|s3] [--seed N]

- lru: one LRU list over all keys.
- s3: one S3-FIFO (Yang et al., SOSP 2023) over all keys: a small FIFO of
  10% of ITEMS, a main FIFO, a ghost of ITEMS keys, access counts up to 3
  (what ext/store/evict.c does per class and shard).

The sequence and the client's batches are hitmatrix's (cache_aside), so the
figure compares with the cell's measured hit ratios.  Standard library only.
"""

import argparse
import collections

from bench import hitmatrix


class LRU:
    def __init__(self, cap):
        self.cap, self.keys = cap, collections.OrderedDict()

    def get(self, k):
        if k in self.keys:
            self.keys.move_to_end(k)
            return True
        return False

    def set(self, k):
        self.keys[k] = True
        self.keys.move_to_end(k)
        while len(self.keys) > self.cap:
            self.keys.popitem(last=False)


class S3FIFO:
    SMALL_SHARE = 0.10
    FREQ_MAX = 3

    def __init__(self, cap):
        self.cap = cap
        self.small_cap = max(1, int(cap * self.SMALL_SHARE))
        self.small, self.main = collections.OrderedDict(), collections.OrderedDict()
        self.ghost = collections.OrderedDict()
        self.freq = {}

    def get(self, k):
        if k in self.freq:
            self.freq[k] = min(self.FREQ_MAX, self.freq[k] + 1)
            return True
        return False

    def _evict_one(self):
        while True:
            if len(self.small) >= self.small_cap or not self.main:
                k, _ = self.small.popitem(last=False)
                if self.freq[k] > 0:
                    self.main[k] = True      # read while small: to main
                    continue
                del self.freq[k]
                self.ghost[k] = True
                while len(self.ghost) > self.cap:
                    self.ghost.popitem(last=False)
                return
            k, _ = self.main.popitem(last=False)
            if self.freq[k] > 0:
                self.freq[k] -= 1
                self.main[k] = True
                continue
            del self.freq[k]
            return

    def set(self, k):
        if k in self.freq:
            return
        while len(self.freq) >= self.cap:
            self._evict_one()
        self.freq[k] = 0
        if self.ghost.pop(k, None):
            self.main[k] = True
        else:
            self.small[k] = True


POLICIES = {"lru": LRU, "s3": S3FIFO}


def hit_ratio(cell, items, policy="s3", seed=hitmatrix.SEED):
    spec = hitmatrix.cells()[cell]
    cache = POLICIES[policy](items)

    def multiget(ids):
        return {i for i in ids if cache.get(i)}

    def set_many(pairs):
        for i, _ in pairs:
            cache.set(i)

    gets, hits = hitmatrix.cache_aside(spec, seed, multiget, set_many)
    return hits / gets if gets else 0.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cell")
    ap.add_argument("items", type=int)
    ap.add_argument("--policy", choices=sorted(POLICIES), default="s3")
    ap.add_argument("--seed", type=int, default=hitmatrix.SEED)
    a = ap.parse_args(argv)
    print(f"{a.cell} {a.policy} {a.items} items: hit ratio "
          f"{hit_ratio(a.cell, a.items, a.policy, a.seed):.4f}")


if __name__ == "__main__":
    main()
