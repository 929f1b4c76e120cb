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
    c.freq[0] = 2
    c.set(100)               # main's tail 0 is read: back to the head, 1 goes
    assert 1 not in c.freq and c.freq[0] == 1
    assert list(c.main)[-1] == 0 and list(c.small) == [100]


def test_more_items_hit_more_on_a_cell():
    cell = "noscan-small-m16-z0.9"
    a, b = policysim.hit_ratio(cell, 2000), policysim.hit_ratio(cell, 8000)
    assert 0 < a < b < 1
