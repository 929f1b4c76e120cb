"""bench/policysim.py's policies on sequences small enough to follow by hand."""

from bench import policysim


def test_lru_keeps_the_most_recently_used():
    c = policysim.LRU(2)
    c.set(1)
    c.set(2)
    assert c.get(1)          # 1 is now newer than 2
    c.set(3)                 # 2 goes
    assert [c.get(k) for k in (1, 2, 3)] == [True, False, True]


def test_s3fifo_one_time_keys_leave_from_small_and_read_ones_stay():
    """10 items: a small queue of 1.  Key 0 is read once, so when the small
    queue is full it moves to main; keys never read leave from small to the
    ghost, and a key set again while in the ghost goes straight to main."""
    c = policysim.S3FIFO(10)
    c.set(0)
    assert c.get(0)
    for k in range(1, 20):
        c.set(k)
    assert c.get(0)
    assert list(c.main) == [0]
    assert len(c.freq) == 10
    # keys 1-10 left in that order; the ghost holds the last 10 keys to leave
    assert not c.get(10) and list(c.ghost) == list(range(1, 11))
    c.set(10)                # 11 leaves the small queue first, then 10 is back
    assert list(c.main) == [0, 10] and 10 not in c.ghost and 11 in c.ghost


def test_s3fifo_main_reinserts_read_items_with_one_less():
    c = policysim.S3FIFO(10)
    for k in range(10):
        c.main[k] = True
        c.freq[k] = 0
    c.used = 10
    c.freq[0] = 2
    c.set(100)               # main's tail 0 is read: back to the head, 1 goes
    assert 1 not in c.freq and c.freq[0] == 1
    assert list(c.main)[-1] == 0 and list(c.small) == [100]


def test_more_items_hit_more_on_a_cell():
    cell = "noscan-small-m16-z0.9"
    a, b = policysim.hit_ratio(cell, 2000), policysim.hit_ratio(cell, 8000)
    assert 0 < a < b < 1


def test_lfu_keeps_the_keys_asked_most_misses_included():
    c = policysim.LFU(2)
    c.set(1)
    c.set(2)
    for k in (1, 1, 1, 2, 3, 3):
        c.get(k)
    c.set(3)                 # asked twice while missing: 2 (asked once) goes
    assert c.held == {1, 3}


def test_lfu_with_costs_keeps_the_keys_asked_most_per_byte():
    cost = {"a": 10, "b": 1, "c": 1}.get
    c = policysim.LFU(11, cost)
    c.set("a")
    c.set("b")
    for k in ("a", "a", "a", "b", "c", "c"):
        c.get(k)
    c.set("c")               # a: 3 asks over 10 bytes is the least per byte
    assert c.held == {"b", "c"} and c.used == 2


def test_costs_bound_lru_and_s3fifo_in_bytes():
    cost = {1: 4, 2: 4, 3: 4, 4: 8}.get
    lru = policysim.LRU(10, cost)
    for k in (1, 2, 3):
        lru.set(k)
    assert list(lru.keys) == [2, 3] and lru.used == 8
    s3 = policysim.S3FIFO(10, cost)
    for k in (1, 2, 3, 4):
        s3.set(k)
    assert set(s3.freq) == {4} and s3.used == 8
    assert list(s3.ghost) == [2, 3] and s3.ghost_used == 8


def test_frequency_oracle_beats_s3fifo_on_a_static_cell():
    cell = "noscan-small-m16-z0.9"
    assert policysim.hit_ratio(cell, 4000, "lfu") > policysim.hit_ratio(cell, 4000, "s3")
