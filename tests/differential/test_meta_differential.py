"""Differential test of the meta protocol: seeded request streams in which
most requests are meta commands (mg, ms, md, ma, mn; `me` is left out, its
debug line carries server-specific numbers), mixed with text commands on the
same connections and in the same pipelined batches, sent to memcached 1.6.18
and to each backend and compared byte for byte (cas uniques structurally,
remaining TTLs as "some seconds"; see harness.py and gen.py).

Environment:
  MPCACHE_DIFF_SEED       base seed (default 1618); printed on failure
  MPCACHE_DIFF_META_OPS   operations in the stream (default 40000, of which
                          at least half must be meta commands)
"""

import os
import time

from tests.differential.harness import Differ
from tests.differential.test_differential import (  # noqa: F401  (pair is a fixture)
    SEED, pair, report, triage)

META_OPS = int(os.environ.get("MPCACHE_DIFF_META_OPS", "40000"))
META_KINDS = {"mg", "ms", "ms-big", "md", "ma", "meta-garbage"}
# The floor: meta operations per run.
MIN_META_OPS = min(20000, META_OPS // 2)


def test_meta_differential(pair):
    ref, cand = pair
    seed = SEED * 1000 + 50
    differ = Differ(ref.addr, cand.addr, seed, "meta")
    kinds = {}
    draw = differ.gen.unit

    def counting_unit(first=False):
        u = draw(first)
        kinds[u.kind] = kinds.get(u.kind, 0) + 1
        return u

    differ.gen.unit = counting_unit
    t0 = time.monotonic()
    diffs = differ.run(META_OPS)
    elapsed = time.monotonic() - t0
    meta_ops = sum(n for k, n in kinds.items() if k in META_KINDS)
    print(f"{cand.name}/meta: seed {seed}, {differ.ops} ops ({meta_ops} meta), "
          f"{differ.batches} batches, {elapsed:.1f}s, {len(diffs)} differences")
    assert ref.alive(), f"memcached died: {ref.output()}"
    confirmed, flaky = triage(differ, diffs)
    for d in flaky:
        print(f"reference-dependent difference (not reproduced on replay, or a fresh memcached "
              f"answers as the candidate; seed {seed}):\n{d.describe(600)}")
    assert not confirmed, report(differ, confirmed, diffs, cand)
    assert cand.alive(), f"{cand.name} died:\n{cand.output()}"
    assert differ.ops >= META_OPS
    assert meta_ops >= MIN_META_OPS, kinds
