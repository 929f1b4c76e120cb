"""Hostile and broken clients: random bytes, truncated requests, huge lines,
abrupt closes in the middle of a data block, clients that never read.  The
server must neither crash nor hang, and well-behaved connections must keep
being served while the attack goes on and afterwards."""

import os
import random
import socket
import struct
import threading
import time

import pytest

from tests.support.raw import RawConn

SEED = int(os.environ.get("MPCACHE_STRESS_SEED", "20240607"))
ATTACK_SECONDS_MAX = 60

WORDS = [b"set", b"add", b"replace", b"append", b"prepend", b"cas", b"get", b"gets",
         b"bget", b"gat", b"gats", b"touch", b"delete", b"incr", b"decr", b"flush_all 0",
         b"version", b"verbosity", b"mn", b"stats", b"stats settings", b"stats items",
         b"stats slabs", b"stats conns", b"stats reset", b"mg", b"ms", b"md", b"ma", b"me",
         b"noreply", b"0", b"-1", b"4294967296", b"18446744073709551616", b"99999999999",
         b"2147483647", b"1048576", b"k", b"\x00", b"\xff", b"\t", b" ", b"\r", b"\n", b"\r\n"]


def check_serving(addr, tag, timeout=5.0):
    """A fresh connection stores and reads back a value, within timeout."""
    value = b"ok-" + tag
    with RawConn(addr, timeout=timeout) as c:
        key = b"probe-" + tag
        reply = c.call(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key),
                       timeout=timeout)
    assert reply == b"STORED\r\nVALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value), reply


def abort(sock):
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def random_request(rng):
    kind = rng.randrange(10)
    if kind == 0:                                     # random bytes
        return rng.randbytes(rng.randrange(1, 3000))
    if kind == 1:                                     # word salad from command fragments
        return b" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 40))) + b"\r\n"
    if kind == 2:                                     # storage line, truncated data block
        n = rng.choice([10, 1000, 100000, 1048576, 2000000])
        return b"set trunc 0 0 %d\r\n" % n + b"x" * rng.randrange(0, min(n, 50000))
    if kind == 3:                                     # huge line without newline
        return rng.choice([b"", b"get ", b"gets ", b"set "]) + b"k" * rng.choice([2049, 5000, 70000, 300000])
    if kind == 4:                                     # huge multi-get, with newline
        return b"get " + b" ".join(b"k%d" % i for i in range(rng.randrange(100, 20000))) + b"\r\n"
    if kind == 5:                                     # wrong-length data blocks
        n = rng.randrange(0, 100)
        return b"set w 0 0 %d\r\n" % n + b"y" * rng.randrange(0, 200) + b"\r\n"
    if kind == 6:                                     # bad numbers everywhere
        num = rng.choice([b"-1", b"+7", b"1_0", b"0x10", b"4294967296", b"-2147483649",
                          b"18446744073709551616", b"", b"abc", b"9" * 40])
        return rng.choice([b"set k %s 0 1\r\nx\r\n", b"set k 0 %s 1\r\nx\r\n", b"set k 0 0 %s\r\nx\r\n",
                           b"incr k %s\r\n", b"touch k %s\r\n", b"gat %s k\r\n",
                           b"flush_all %s\r\n", b"verbosity %s\r\n", b"cas k 0 0 1 %s\r\nx\r\n"]) % num
    if kind == 7:                                     # meta commands with junk flags
        return rng.choice([b"mg", b"ms", b"md", b"ma", b"me"]) + b" k " + \
            b" ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 30))) + b"\r\n"
    if kind == 8:                                     # deep pipeline of valid requests
        return b"set p 0 0 3\r\nabc\r\n" + b"get p p p p\r\n" * rng.randrange(1, 3000)
    return rng.choice([b"\r\n" * 50, b"\n" * 50, b"\r\r\n", b"\x00\r\n", b"GET / HTTP/1.1\r\n\r\n",
                       b"quit\r\n", b"shutdown\r\n", b"shutdown graceful\r\n",
                       b"stats detail dump\r\n", b"lru_crawler metadump all\r\n",
                       b"watch\r\n", b"cache_memlimit 0\r\n", b"slabs automove 1\r\n"])


def attacker(addr, rng, rounds, errors):
    for r in range(rounds):
        try:
            s = socket.create_connection(addr, timeout=5)
        except OSError as e:
            errors.append(f"connect failed: {e!r}")
            return
        try:
            data = random_request(rng)
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(0, 4)))
            prev = 0
            try:
                for cut in cuts + [len(data)]:
                    s.sendall(data[prev:cut])
                    prev = cut
                end = rng.randrange(4)
                if end == 0:
                    # Read a little of the replies (`watch` streams forever).
                    s.settimeout(0.05)
                    deadline = time.monotonic() + 0.2
                    try:
                        while s.recv(65536) and time.monotonic() < deadline:
                            pass
                    except (socket.timeout, OSError):
                        pass
            except OSError:
                pass                                   # the server closed on us: allowed
            if rng.randrange(2):
                abort(s)
        finally:
            s.close()


def victim(addr, stop, errors, served):
    """A well-behaved client that must be served throughout the attack."""
    i = 0
    try:
        with RawConn(addr, timeout=5) as c:
            while not stop.is_set():
                v = b"%d" % i
                reply = c.call(b"set victim 0 0 %d\r\n%s\r\nget victim\r\n" % (len(v), v))
                want = b"STORED\r\nVALUE victim 0 %d\r\n%s\r\nEND\r\n" % (len(v), v)
                if reply != want:
                    errors.append(f"victim got {reply!r}, wanted {want!r}")
                    return
                i += 1
                served[0] = i
                time.sleep(0.005)
    except OSError as e:
        errors.append(f"victim connection failed: {e!r}")


def test_bad_input_never_crashes_or_hangs(server_factory):
    srv = server_factory(threads=2, memory_mb=64)
    stop = threading.Event()
    errors, victim_errors, served = [], [], [0]
    vt = threading.Thread(target=victim, args=(srv.addr, stop, victim_errors, served))
    vt.start()
    attackers = [threading.Thread(target=attacker,
                                  args=(srv.addr, random.Random(SEED + i), 150, errors))
                 for i in range(4)]
    t0 = time.monotonic()
    for t in attackers:
        t.start()
    for t in attackers:
        t.join(ATTACK_SECONDS_MAX)
    hung = any(t.is_alive() for t in attackers)
    mid = served[0]
    time.sleep(0.2)
    stop.set()
    vt.join(10)
    elapsed = time.monotonic() - t0
    assert not hung, f"attackers still blocked after {ATTACK_SECONDS_MAX}s (seed {SEED})"
    assert srv.alive(), f"{srv.name} died under bad input (seed {SEED}):\n{srv.output()}"
    assert not errors, errors[:5]
    assert not victim_errors, f"well-behaved client disturbed (seed {SEED}): {victim_errors}"
    assert served[0] > mid, "the well-behaved client stopped being served"
    assert served[0] > 20, f"only {served[0]} victim round trips in {elapsed:.1f}s"
    check_serving(srv.addr, b"after")


def test_abrupt_close_mid_data_block(server_factory):
    srv = server_factory(threads=2)
    for i in range(200):
        s = socket.create_connection(srv.addr, timeout=5)
        s.sendall(b"set mid%d 0 0 100000\r\n" % i + b"z" * (i * 400))
        if i % 2:
            abort(s)
        else:
            s.close()
    check_serving(srv.addr, b"mid")
    with RawConn(srv.addr) as c:
        # Half-received blocks were never stored.
        assert c.call(b"get mid0 mid1 mid199\r\n") == b"END\r\n"
    assert srv.alive()


def test_clients_that_never_read(server_factory):
    """Pipelined gets of a large value from clients that never read their
    replies: the server must keep serving others (and bound its buffers)."""
    srv = server_factory(threads=2, memory_mb=64)
    big = b"B" * 500000
    with RawConn(srv.addr) as c:
        assert c.call(b"set big 0 0 %d\r\n%s\r\n" % (len(big), big)) == b"STORED\r\n"
    hogs = []
    for _ in range(8):
        s = socket.create_connection(srv.addr, timeout=5)
        s.setblocking(False)
        req = b"get big\r\n" * 2000            # ~1 GB of replies if the server buffered them all
        try:
            s.send(req)
        except BlockingIOError:
            pass
        hogs.append(s)
    time.sleep(0.5)
    check_serving(srv.addr, b"hogs")
    for s in hogs:
        abort(s)
    check_serving(srv.addr, b"after-hogs")
    assert srv.alive()


def test_many_idle_connections_do_not_block_others(server_factory):
    srv = server_factory(threads=2, conn_limit=1024)
    idle = [socket.create_connection(srv.addr, timeout=5) for _ in range(300)]
    try:
        for s in idle[::3]:
            s.sendall(b"get partial")      # an unfinished line on a third of them
        check_serving(srv.addr, b"idle")
    finally:
        for s in idle:
            s.close()
    check_serving(srv.addr, b"idle-closed")


@pytest.mark.parametrize("garbage_seed", range(3))
def test_random_bytes_then_valid_requests_on_fresh_connections(server_factory, garbage_seed):
    srv = server_factory(threads=2)
    rng = random.Random(SEED * 31 + garbage_seed)
    for i in range(100):
        s = socket.create_connection(srv.addr, timeout=5)
        s.sendall(rng.randbytes(rng.randrange(1, 500)))
        abort(s)
    check_serving(srv.addr, b"g%d" % garbage_seed)
    assert srv.alive()
