"""flush_all <absolute unix time> at the second boundary, side by side with
memcached 1.6.18 on every backend.

memcached's clock (memcached.c clock_handler) ticks once a second from the
instant the process started, and process_started is the wall clock's second
at start less 62: its rel time is never ahead of the wall clock's second.
flush_all T sets oldest_live to realtime(T) - 1 (process_flush_all_command),
and item_is_flushed hides an item once current_time reaches oldest_live if
its time is at or before it.  So, by the wall clock, the flush takes effect
no earlier than T - 1 and no later than T, and it hides every item stored
before T and none stored from T + 1 on.
"""

import math
import time

from tests.support.raw import RawConn


def server_time(c):
    reply = c.call(b"stats\r\n")
    for line in reply.split(b"\r\n"):
        if line.startswith(b"STAT time "):
            return int(line.split()[2])
    raise AssertionError(reply)


def test_clock_never_ahead_of_the_wall_clock(server_factory):
    srv = server_factory(threads=2)
    with RawConn(srv.addr) as c:
        end = time.time() + 2.3
        while time.time() < end:
            before = time.time()
            t = server_time(c)
            after = time.time()
            assert t <= math.floor(after), (srv.name, t, after)
            assert t >= math.floor(before) - 1, (srv.name, t, before)
            time.sleep(0.005)


def test_flush_all_absolute_time_boundary(server_factory):
    srv = server_factory(threads=2)
    with RawConn(srv.addr) as c:
        assert c.call(b"set early 0 0 1\r\na\r\n") == b"STORED\r\n"
        deadline = math.floor(time.time()) + 3
        assert c.call(b"flush_all %d\r\n" % deadline) == b"OK\r\n"
        sets = []
        i = 0
        while True:
            w0 = time.time()
            if w0 > deadline + 1.5:
                break
            key = b"k%d" % i
            i += 1
            assert c.call(b"set " + key + b" 0 0 1\r\nb\r\n") == b"STORED\r\n"
            hit = c.call(b"get early\r\n") != b"END\r\n"
            w1 = time.time()
            sets.append((key, w0, w1))
            if w1 < deadline - 1:
                assert hit, f"{srv.name}: flushed at {w1:.3f}, deadline {deadline}"
            if w0 >= deadline:
                assert not hit, f"{srv.name}: not flushed at {w0:.3f}, deadline {deadline}"
            time.sleep(0.01)
        for key, w0, w1 in sets:
            found = c.call(b"get " + key + b"\r\n") != b"END\r\n"
            if w1 < deadline:
                assert not found, f"{srv.name}: {key} set at {w0:.3f} survived flush_all {deadline}"
            if w0 >= deadline + 1:
                assert found, f"{srv.name}: {key} set at {w0:.3f} flushed by flush_all {deadline}"
