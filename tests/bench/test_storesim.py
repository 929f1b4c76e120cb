"""bench/storesim.py's model on cells small enough to reason about: what a
fill holds is worked out by hand, and size bands that a cell uses one of
give the plain store's figures."""

import pytest

from bench import hitmatrix, storesim

BANDED = [name for name, row in storesim.CONFIGS.items() if "growth" in row]


def aside_300(memory):
    """An aside cell of 300 B values as hitmatrix.cells() makes them, at a small -m."""
    keys = int(memory * 1024 * 1024 / (300 + 60) * 5)
    return {"kind": "aside", "memory": memory, "keys": keys, "sizes": "fixed-300",
            "zipf": 0.7, "ops": keys * 4}


def test_fill_holds_the_newest_whole_segments():
    """-m 4 in 64 KiB segments, one shard: with no gets a fill is a FIFO of
    segments, and the newest 64 are held.  Ids from 1000 up make 332-byte
    items (23 + 6 to 9 bytes of key + 300, rounded up to 4), 197 to a
    segment; ids below 1000 make 328-byte items, 199 to a segment, so the
    first six segments hold ids 0-1191 (five of 199, then 995-999 and 192
    more in 65,536 - 5 x 328 bytes).  With 1192 + 197k keys the last
    segment is full."""
    assert storesim.item_bytes(999, 300) == 328
    assert storesim.item_bytes(1000, 300) == storesim.item_bytes(9_999_999, 300) == 332
    p = dict(storesim.params("c"), shards=1)
    assert p["seg"] == 64 << 10
    per_segment = (64 << 10) // 332
    segments = (4 << 20) // (64 << 10)
    spec = {"kind": "fill", "memory": 4, "keys": 1192 + per_segment * 300, "sizes": "fixed-300"}
    r = storesim.run_cell(spec, p)
    assert r["items"] == segments * per_segment == 12_608
    assert r["value_bytes"] == r["items"] * 300
    assert r["census"]["segments"] == segments


_plain = {}


def plain(seg, shards):
    """The plain store with this segment size and shard count on aside_300(2)."""
    if (seg, shards) not in _plain:
        r = storesim.run_cell(aside_300(2), dict(storesim.params("c"), seg=seg, shards=shards))
        # the cell evicts, promotes and compacts: the comparison means something
        assert r["stats"]["victims_main"] and r["stats"]["promoted"]
        assert r["stats"]["victim_became_main_tail"]
        _plain[seg, shards] = r
    return _plain[seg, shards]


@pytest.mark.parametrize("name", BANDED)
def test_one_band_in_use_is_the_plain_store(name):
    """Every item of 300 B values falls in the last band: the empty bands,
    the rule choosing among bands and the byte pool must change nothing
    from the plain store with that band's segment size and the same shards."""
    p = storesim.params(name)
    assert {k: p[k] for k in ("small_share", "merge")} == \
        {k: storesim.DEFAULTS[k] for k in ("small_share", "merge")}
    r = storesim.run_cell(aside_300(2), p)
    assert len(r["bands"]) > 1 or p["first"] >= r["bands"][0][0]   # first=512: one band
    ref = plain(r["bands"][-1][1], p["shards"])
    for key in ("hit_ratio", "gets", "hits"):
        assert r[key] == ref[key]
    assert r["census"] == ref["census"]
    for key in ("victims_small", "victims_main", "promoted", "reinserted", "evicted_small",
                "evicted_main", "ghost_hits", "copied_bytes", "victim_became_main_tail"):
        assert r["stats"].get(key) == ref["stats"].get(key), key


def test_minseg_sizes():
    """minseg: segmul of the band's bound in 4 KiB pages, at least minseg;
    the 300 B band of the mix configs keeps 64 KiB, of minseg ones minseg."""
    spec = hitmatrix.cells()["aside-loguniform-m16-z0.7"]
    sizes = storesim.Store(spec, storesim.params("F2R1wM16")).seg_sizes
    assert [s >> 10 for s in sizes] == [16] * 6 + [32, 64, 128, 256, 260]
    sizes = storesim.Store(spec, storesim.params("F2R1wM16x2")).seg_sizes
    assert [s >> 10 for s in sizes] == [16] * 7 + [32, 64, 128, 132]
    p300 = storesim.params("F2R1wM32")
    assert storesim.segment_size(aside_300(2), p300, 332) == 32 << 10
    assert storesim.segment_size(aside_300(2), storesim.params("F2R1wmix"), 332) == 64 << 10


def test_unknown_config_is_refused(capsys):
    with pytest.raises(ValueError, match=r"unknown config 'c2' \(known: a, b, c,"):
        storesim.params("c2")
    with pytest.raises(SystemExit) as e:
        storesim.main(["--configs", "c,c2", "--cells", "fill-300B-m64"])
    assert e.value.code == 2
    assert "unknown config 'c2'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", sorted(hitmatrix.SIZES))
def test_largest_value_matches_size_fn(kind):
    """The last band's bound comes from hitmatrix.SIZES, not from size_fn."""
    f = hitmatrix.size_fn(kind)
    top = max(f(i) for i in range(20000))
    assert 0.99 * hitmatrix.SIZES[kind][1] <= top <= hitmatrix.SIZES[kind][1]
