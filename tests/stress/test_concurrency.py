"""Many clients on separate connections (spread over the channels by
SO_REUSEPORT) updating the same few keys: the final values prove that no
update was lost and none was applied twice."""

import threading

import pytest

from tests.support.raw import RawConn

CLIENTS = 8
CHANNELS = 2


def run_threads(target, n=CLIENTS):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as e:  # reported in the main thread
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    assert not errors, errors


@pytest.fixture
def srv(server_factory):
    return server_factory(threads=CHANNELS)


def test_incr_decr_lose_no_update(srv):
    keys = [b"ctr0", b"ctr1", b"ctr2"]
    per_client = 1500
    batch = 100
    with RawConn(srv.addr) as c:
        assert c.call(b"".join(b"set %s 0 0 1\r\n0\r\n" % k for k in keys)) == b"STORED\r\n" * 3
        assert c.call(b"set down 0 0 6\r\n100000\r\n") == b"STORED\r\n"
    seen = {k: [] for k in keys}
    lock = threading.Lock()

    def client(i):
        with RawConn(srv.addr, timeout=30) as c:
            mine = {k: [] for k in keys}
            for start in range(0, per_client, batch):
                reqs = []
                for j in range(start, start + batch):
                    reqs.append(b"incr %s 1\r\n" % keys[(i + j) % 3])
                    reqs.append(b"decr down 1 noreply\r\n")
                reply = c.call(b"".join(reqs))
                values = reply.split(b"\r\n")
                assert values[-1] == b"" and len(values) == batch + 1, reply[:200]
                for j, v in zip(range(start, start + batch), values):
                    mine[keys[(i + j) % 3]].append(int(v))
            with lock:
                for k in keys:
                    seen[k].extend(mine[k])

    run_threads(client)
    total = CLIENTS * per_client
    with RawConn(srv.addr) as c:
        reply = c.call(b"get ctr0 ctr1 ctr2 down\r\n")
    finals = {}
    for line in reply.split(b"\r\n"):
        if line.startswith(b"VALUE "):
            finals[line.split()[1]] = None
    got = reply.split(b"\r\n")
    for idx, line in enumerate(got):
        if line.startswith(b"VALUE "):
            finals[line.split()[1]] = int(got[idx + 1])
    assert sum(finals[k] for k in keys) == total
    assert finals[b"down"] == 100000 - total
    for k in keys:
        # Every incr saw a distinct new value: exactly 1..final, once each.
        assert sorted(seen[k]) == list(range(1, finals[k] + 1)), k


def test_cas_append_loops_lose_no_update(srv):
    rounds = 60
    with RawConn(srv.addr) as c:
        assert c.call(b"set log 0 0 0\r\n\r\nset n 0 0 1\r\n0\r\n") == b"STORED\r\nSTORED\r\n"
    retries = [0] * CLIENTS

    def gets(c, key):
        reply = c.call(b"gets %s\r\n" % key)
        head, _, rest = reply.partition(b"\r\n")
        parts = head.split(b" ")
        assert parts[0] == b"VALUE" and len(parts) == 5, reply
        size = int(parts[3])
        assert rest[size:] == b"\r\nEND\r\n", reply
        return rest[:size], parts[4]

    def client(i):
        with RawConn(srv.addr, timeout=30) as c:
            for r in range(rounds):
                token = b"<%d.%d>" % (i, r)
                while True:
                    value, cas = gets(c, b"log")
                    new = value + token
                    reply = c.call(b"cas log 0 0 %d %s\r\n%s\r\n" % (len(new), cas, new))
                    if reply == b"STORED\r\n":
                        break
                    assert reply == b"EXISTS\r\n", reply
                    retries[i] += 1
                while True:
                    value, cas = gets(c, b"n")
                    new = b"%d" % (int(value) + 1)
                    reply = c.call(b"cas n 0 0 %d %s\r\n%s\r\n" % (len(new), cas, new))
                    if reply == b"STORED\r\n":
                        break
                    assert reply == b"EXISTS\r\n", reply

    run_threads(client)
    with RawConn(srv.addr) as c:
        log, _ = gets(c, b"log")
        n, _ = gets(c, b"n")
    assert int(n) == CLIENTS * rounds
    tokens = log[1:-1].split(b"><")
    assert len(tokens) == CLIENTS * rounds
    assert sorted(tokens) == sorted(b"%d.%d" % (i, r) for i in range(CLIENTS) for r in range(rounds))
    # Each client's appends landed in its own order.
    for i in range(CLIENTS):
        mine = [int(t.split(b".")[1]) for t in tokens if t.split(b".")[0] == b"%d" % i]
        assert mine == list(range(rounds))


def test_plain_appends_and_prepends_interleave_whole(srv):
    per_client = 200
    with RawConn(srv.addr) as c:
        assert c.call(b"set a 0 0 0\r\n\r\n") == b"STORED\r\n"

    def client(i):
        piece = b"%d" % i * 7          # each piece is one client's digit, 7 bytes
        with RawConn(srv.addr, timeout=30) as c:
            for start in range(0, per_client, 50):
                ops = [b"%s a 0 0 7\r\n%s\r\n" % (b"append" if j % 2 else b"prepend", piece)
                       for j in range(start, start + 50)]
                assert c.call(b"".join(ops)) == b"STORED\r\n" * 50

    run_threads(client)
    with RawConn(srv.addr) as c:
        reply = c.call(b"get a\r\n")
    size = CLIENTS * per_client * 7
    head = b"VALUE a 0 %d\r\n" % size
    assert reply.startswith(head) and reply.endswith(b"\r\nEND\r\n")
    value = reply[len(head):-len(b"\r\nEND\r\n")]
    # Pieces never interleave byte-wise: every 7-byte slot is one client's.
    slots = [value[k:k + 7] for k in range(0, size, 7)]
    assert all(s == s[:1] * 7 for s in slots)
    for i in range(CLIENTS):
        assert slots.count(b"%d" % i * 7) == per_client
