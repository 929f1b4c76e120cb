"""More than one channel: shards per channel and their lock counters, idle
channels that cost nothing, and placement (--pin-channels) on real mpcache
processes of both engines."""

import os
import socket
import time

import pytest
from pymemcache.client.base import Client

from tests.support.raw import RawConn, stats

pytestmark = pytest.mark.mpcache_only


def shard_locks(addr):
    """stats channels' shard lines: {shard: (acquires, waits)} and the count."""
    st = stats(addr, b"channels")
    n = int(st["shards"])
    return n, {i: (int(st[f"shard_{i}:lock_acquires"]), int(st[f"shard_{i}:lock_waits"]))
               for i in range(n)}


def channel_syscalls(addr):
    st = stats(addr, b"channels")
    return [int(st[f"{ch}:syscalls"]) for ch in range(int(st["channels"]))]


@pytest.mark.parametrize("threads,shards", [(1, 4), (2, 8), (3, 16)])
def test_four_shards_per_channel(server_factory, backend, threads, shards):
    """-t N has 4N shards rounded up to a power of two, and every store takes
    the lock of its key's shard: 2,000 sets over many keys land on every
    shard, and the acquisitions add up to at least one per set."""
    srv = server_factory(threads=threads, memory_mb=1024)
    n, before = shard_locks(srv.addr)
    assert n == shards
    client = Client(srv.addr)
    for i in range(2000):
        client.set(f"key:{i}", b"v", noreply=False)
    _, after = shard_locks(srv.addr)
    grown = {i: after[i][0] - before[i][0] for i in range(n)}
    assert all(g > 0 for g in grown.values()), grown
    assert sum(grown.values()) >= 2000
    # waits never exceed acquisitions
    assert all(w <= a for a, w in after.values())


def test_lock_waits_count_contention(server_factory, backend):
    """Two channels hammering the same key contend for its shard's lock;
    the waits are counted on that shard and nowhere else is it busy."""
    srv = server_factory(threads=2)
    conns = [socket.create_connection(srv.addr) for _ in range(16)]
    try:
        # pipelined sets of one key from 16 connections spread over both channels
        burst = (b"set hot 0 0 1 noreply\r\nx\r\n" * 2000)
        deadline = time.monotonic() + 20
        waits = 0
        while time.monotonic() < deadline:
            for c in conns:
                c.sendall(burst)
            with RawConn(srv.addr) as r:
                assert r.call(b"get hot\r\n") == b"VALUE hot 0 1\r\nx\r\nEND\r\n"
            _, locks = shard_locks(srv.addr)
            waits = sum(w for _, w in locks.values())
            if waits > 0:
                break
        assert waits > 0, "no lock wait counted under contention from two channels"
    finally:
        for c in conns:
            c.close()


def test_idle_channels_sleep(server_factory, backend):
    """An idle -t 2 server's channels wake about once a second for
    maintenance, not ten times: over 3 s each channel makes a handful of
    system calls (the stats requests that read them included)."""
    srv = server_factory(threads=2)
    time.sleep(1.5)   # start-up and the first maintenance ticks
    before = channel_syscalls(srv.addr)
    time.sleep(3.0)
    after = channel_syscalls(srv.addr)
    grown = [a - b for a, b in zip(after, before)]
    # 3 ticks a channel, plus the calls serving a stats connection (accept,
    # register, read, write, close: up to ~8 on epoll), with room for a late
    # tick on a busy machine; ten wake-ups a second would be 30 and more
    assert all(g <= 20 for g in grown), grown


def cpus_allowed(pid):
    """{tid: allowed CPU list text} for every thread of the process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out[int(tid)] = line.split(":", 1)[1].strip()
        except FileNotFoundError:
            pass
    return out


def single_cpu(text):
    return text.isdigit()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to tell pinned from not")
@pytest.mark.parametrize("pinned", [False, True])
def test_placement(server_factory, backend, pinned):
    """By default no thread of the server is tied to one CPU; with
    --pin-channels channel i runs on the i-th allowed CPU, one each."""
    extra = ("--pin-channels",) if pinned else ()
    srv = server_factory(threads=2, extra=extra)
    allowed = cpus_allowed(srv.proc.pid)
    singles = sorted(v for v in allowed.values() if single_cpu(v))
    if pinned:
        cpus = sorted(os.sched_getaffinity(srv.proc.pid))
        assert singles == sorted(str(c) for c in cpus[:2])
    else:
        assert singles == []


@pytest.mark.parametrize("memory_mb,threads,shards",
                         [(2, 1, 1), (2, 2, 1), (16, 2, 1), (64, 2, 4), (128, 2, 8), (128, 1, 4)])
def test_no_more_shards_than_pages(server_factory, backend, memory_mb, threads, shards):
    """Each shard has 16 pages of -m or more, so a small -m has fewer
    shards than 4 a channel, and the pages it has hold items: 200 small
    values all stay in -m 2 (with a shard a page short, each store took the
    other shard's only page and the cache held two)."""
    srv = server_factory(threads=threads, memory_mb=memory_mb)
    n, _ = shard_locks(srv.addr)
    assert n == shards
    client = Client(srv.addr)
    for i in range(200):
        client.set(f"k{i}", b"v" * 100, noreply=False)
    got = client.get_many([f"k{i}" for i in range(200)])
    assert len(got) == 200
    assert all(v == b"v" * 100 for v in got.values())
