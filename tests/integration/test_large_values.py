"""Large values: mpcache sends a value of 8 KiB or more straight from its
item, held by a reference, instead of copying it into the output buffer
(ext/io/conn.c, "values sent from their items").  These tests pin what must not
change because of that, on every backend (memcached holds its items by
reference the same way):

- replies are byte-exact, around the size threshold and past the number of
  references one connection holds (16, after which values are copied);
- a value queued for a client that is not reading stays intact while the
  item is overwritten, deleted and its memory recycled by eviction;
- a bad multi-get culls queued values exactly as it culls copied ones;
- a reply past the output mark (a multi-get of many large values) is sent
  as it is built (ext/proto/executor.c, get_common) and arrives exactly as
  memcached's, including a bad key's cull of the whole get.
"""

import socket
import time

import pytest

from tests.support.raw import RawConn, stats

LONG_KEY = b"k" * 251


def pattern(tag, size):
    """size bytes that say which value they belong to, everywhere in them."""
    unit = b"<%s>" % tag
    return (unit * (size // len(unit) + 1))[:size]


def store(conn, key, value, flags=0):
    assert conn.call(b"set %s %d 0 %d\r\n%s\r\n" % (key, flags, len(value), value)) == b"STORED\r\n"


def value_reply(key, value, flags=0):
    return b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(value), value)


def recv_exactly(sock, n, timeout=30.0):
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        assert chunk, f"connection closed after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


# 8190 + "\r\n" is the first value sent by reference
@pytest.mark.parametrize("size", [8189, 8190, 8191, 65536, 1000000])
def test_get_and_mg_reply_exactly_around_the_threshold(server, size):
    v = pattern(b"t%d" % size, size)
    with RawConn(server.addr) as c:
        store(c, b"big", v, flags=7)
        assert c.call(b"get big\r\n") == value_reply(b"big", v, 7) + b"END\r\n"
        assert c.call(b"gets big\r\n").startswith(b"VALUE big 7 %d " % size)
        assert c.call(b"mg big v f s\r\n") == b"VA %d f7 s%d\r\n%s\r\n" % (size, size, v)
        assert c.call(b"mg big v q k\r\n") == b"VA %d kbig\r\n%s\r\n" % (size, v)


def test_pipelined_gets_past_the_reference_limit_are_exact(server):
    # 40 large values in one multi-get and 40 single gets in one batch: the
    # connection's 16 references run out and the rest are copied, in order
    values = {b"v%d" % i: pattern(b"v%d" % i, 9000 + 997 * i) for i in range(40)}
    with RawConn(server.addr, timeout=30) as c:
        for k, v in values.items():
            store(c, k, v)
        keys = list(values)
        expected_multi = b"".join(value_reply(k, values[k]) for k in keys) + b"END\r\n"
        assert c.call(b"get " + b" ".join(keys) + b"\r\n") == expected_multi
        batch = b"".join(b"get %s\r\nmg %s v\r\n" % (k, k) for k in keys)
        expected = b"".join(value_reply(k, values[k]) + b"END\r\n" +
                            b"VA %d\r\n%s\r\n" % (len(values[k]), values[k]) for k in keys)
        assert c.call(batch) == expected


def test_bad_key_culls_a_queued_large_value(server):
    v = pattern(b"cull", 50000)
    with RawConn(server.addr) as c:
        store(c, b"big", v)
        assert c.call(b"get big " + LONG_KEY + b"\r\n") == \
            b"CLIENT_ERROR bad command line format\r\n"
        # the value an earlier get transmitted survives the cull
        assert c.call(b"get big\r\nget big " + LONG_KEY + b"\r\n") == \
            value_reply(b"big", v) + b"END\r\nCLIENT_ERROR bad command line format\r\n"


def test_value_queued_for_a_reader_survives_overwrite_delete_and_eviction(server_factory):
    srv = server_factory(memory_mb=16)
    size = 200000
    old = pattern(b"old", size)
    new = pattern(b"new", size)
    n_gets = 60  # 12 MB of replies: far more than the socket buffers hold
    with RawConn(srv.addr, timeout=30) as w:
        store(w, b"big", old)
        reader = socket.create_connection(srv.addr)
        reader.sendall(b"get big\r\n" * n_gets)
        try:
            # the first get has run (its reply is arriving) before the overwrite
            reader.settimeout(10)
            assert reader.recv(9, socket.MSG_PEEK | socket.MSG_WAITALL) == b"VALUE big"
            # while the reader's replies are queued: overwrite, delete, then
            # recycle all memory several times over with other values
            store(w, b"big", new)
            assert w.call(b"delete big\r\n") == b"DELETED\r\n"
            for i in range(300):
                store(w, b"fill%d" % i, pattern(b"f%d" % i, size))
            assert int(stats(srv.addr)["evictions"]) > 100
            replies = []
            for _ in range(n_gets):
                line = b""
                while not line.endswith(b"\r\n"):
                    line += recv_exactly(reader, 1)
                if line == b"END\r\n":
                    replies.append(None)
                    continue
                assert line == b"VALUE big 0 %d\r\n" % size
                data = recv_exactly(reader, size + 2 + 5)
                assert data[size:] == b"\r\nEND\r\n"
                replies.append(data[:size])
        finally:
            reader.close()
    # in order: the old value, intact, from the gets that ran before the
    # overwrite (the first one did), the new one from any that ran before the
    # delete, then misses
    kinds = [b"o" if r == old else b"n" if r == new else b"-" if r is None else b"?"
             for r in replies]
    assert kinds[0] == b"o"
    assert b"?" not in kinds, "a reply held bytes of neither value"
    assert b"".join(kinds).lstrip(b"o").lstrip(b"n").strip(b"-") == b"", kinds
    with RawConn(srv.addr) as c:
        assert c.call(b"get big\r\n") == b"END\r\n"
        store(c, b"after", pattern(b"after", size))
        assert c.call(b"get after\r\n") == value_reply(b"after", pattern(b"after", size)) + b"END\r\n"


def test_reset_with_large_values_queued_leaves_the_server_serving(server):
    v = pattern(b"rst", 300000)
    with RawConn(server.addr) as c:
        store(c, b"big", v)
    for _ in range(20):
        s = socket.create_connection(server.addr)
        s.sendall(b"get big\r\n" * 30)
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    with RawConn(server.addr) as c:
        assert c.call(b"delete big\r\n") == b"DELETED\r\n"
        store(c, b"big", v[::-1])
        assert c.call(b"get big\r\n") == value_reply(b"big", v[::-1]) + b"END\r\n"


# ---- replies past the output mark (1 MiB) stream ----

def test_multiget_past_the_output_mark_is_exact(server):
    """A get whose reply is 24 MB (200 keys of 120 KB, some repeated, some
    missing) is sent as it is built and arrives whole, in order, followed
    by the requests pipelined after it."""
    values = {b"s%d" % i: pattern(b"s%d" % i, 120000 + i) for i in range(100)}
    keys = [b"s%d" % (i % 100) if i % 7 else b"missing%d" % i for i in range(200)]
    with RawConn(server.addr, timeout=60) as c:
        for k, v in values.items():
            store(c, k, v, flags=3)
        expected = b"".join(value_reply(k, values[k], 3) for k in keys if k in values)
        got = c.call(b"get " + b" ".join(keys) + b"\r\nget s1\r\n")
        assert got == expected + b"END\r\n" + value_reply(b"s1", values[b"s1"], 3) + b"END\r\n"


def test_gat_past_the_output_mark_touches_every_key(server):
    values = {b"t%d" % i: pattern(b"t%d" % i, 200000) for i in range(20)}
    with RawConn(server.addr, timeout=60) as c:
        for k, v in values.items():
            store(c, k, v)
        keys = list(values)
        reply = c.call(b"gat 1000 " + b" ".join(keys) + b"\r\n")
        assert reply == b"".join(value_reply(k, values[k]) for k in keys) + b"END\r\n"
        for k in keys:
            assert c.call(b"mg %s t\r\n" % k) in (b"HD t1000\r\n", b"HD t999\r\n")


def test_bad_key_after_the_output_mark_culls_the_whole_get(server):
    """memcached builds a multi-get whole, so a too-long key anywhere culls
    every hit before it: the same when the reply has passed the mark, and
    the keys before the bad one are still fetched (get_hits counts them)."""
    v = pattern(b"m", 300000)
    with RawConn(server.addr, timeout=60) as c:
        store(c, b"m", v)
        before = int(stats(server.addr)["get_hits"])
        assert c.call(b"get " + b"m " * 10 + LONG_KEY + b" m\r\n") == \
            b"CLIENT_ERROR bad command line format\r\n"
        assert int(stats(server.addr)["get_hits"]) - before == 10
        assert c.call(b"get m\r\n") == value_reply(b"m", v) + b"END\r\n"


def test_multiget_read_slowly_is_exact(server):
    """A client that reads a 10 MB multi-get reply in small pieces with
    pauses gets the same bytes."""
    v = pattern(b"slow", 500000)
    with RawConn(server.addr, timeout=60) as c:
        store(c, b"slow", v)
    s = socket.create_connection(server.addr)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    try:
        s.sendall(b"get" + b" slow" * 20 + b"\r\n")
        expected = value_reply(b"slow", v) * 20 + b"END\r\n"
        got = bytearray()
        s.settimeout(30)
        while len(got) < len(expected):
            chunk = s.recv(256 * 1024)
            assert chunk
            got += chunk
            if len(got) < 2 * 1024 * 1024:
                time.sleep(0.01)
        assert bytes(got) == expected
    finally:
        s.close()
