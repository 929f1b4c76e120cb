"""UDP (-U) side by side with memcached 1.6.18, on every backend.

memcached's frame (memcached.c try_read_udp, build_udp_header): 8 bytes,
big-endian request id, sequence number, datagram count, reserved.  A request
is one datagram; each of memcached's response objects (one per command, one
per key of a get, END riding on the last) goes out as its own datagrams of at
most 1392 bytes behind the header, numbered from 0, a get's key that missed
as a bare header with a count of 0.  The expected bytes below are checked on
memcached too.

memcached -t 1 serves the reference side of anything exact: quit leaves
memcached's UDP connection cutting every later datagram short, so no test
sends it but on a fresh server.
"""

import os
import socket
import struct
import time

import pytest

from tests.support.raw import RawConn, stats

HDR = struct.Struct(">HHHH")
DATA = 1392          # memcached's UDP_DATA_SIZE: 1400 - the header


def hdr(rid, seq=0, total=1, reserved=0):
    return HDR.pack(rid, seq, total, reserved)


class UdpClient:
    def __init__(self, addr, rcvbuf=32 << 20):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # a reply of a large value is hundreds of datagrams at once
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)   # SO_RCVBUFFORCE, as root
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def close(self):
        self.sock.close()

    def send(self, payload):
        self.sock.sendto(payload, self.addr)

    def recv_all(self, quiet=0.3, first=3.0, expect=None):
        """Datagrams until none came for `quiet` seconds (or `expect` came)."""
        out = []
        self.sock.settimeout(first)
        try:
            while expect is None or len(out) < expect:
                out.append(self.sock.recv(70000))
                self.sock.settimeout(quiet)
        except socket.timeout:
            pass
        return out

    def ask(self, rid, body, **kw):
        self.send(hdr(rid) + body)
        return self.recv_all(**kw)


def frames(rid, *responses):
    """The datagrams memcached sends for these response objects (None: a
    bare header)."""
    out = []
    for r in responses:
        if r is None:
            out.append(hdr(rid, 0, 0))
            continue
        n = (len(r) + DATA - 1) // DATA
        for i in range(n):
            out.append(hdr(rid, i, n) + r[i * DATA:(i + 1) * DATA])
    return out


def reassemble(datagrams):
    """Response objects from datagrams in arrival order: each starts at
    sequence 0 and is put together by sequence number."""
    resps = []
    for d in datagrams:
        rid, seq, total, res = HDR.unpack(d[:8])
        assert res == 0
        if seq == 0:
            resps.append({"total": total, "parts": {}})
        cur = resps[-1]
        assert cur["total"] == total
        cur["parts"][seq] = d[8:]
    out = []
    for r in resps:
        assert sorted(r["parts"]) == list(range(max(r["total"], 1)))
        out.append(b"".join(r["parts"][i] for i in sorted(r["parts"])))
    return out


@pytest.fixture
def udp_server(server_factory):
    def start(**kw):
        kw.setdefault("threads", 1)
        srv = server_factory(udp=True, **kw)
        return srv
    return start


@pytest.fixture
def client(udp_server):
    srv = udp_server()
    c = UdpClient(srv.addr)
    c.srv = srv
    yield c
    c.close()


def test_set_get_delete_exact_bytes(client):
    assert client.ask(1, b"set k 0 0 5\r\nhello\r\n") == frames(1, b"STORED\r\n")
    assert client.ask(2, b"get k\r\n") == frames(2, b"VALUE k 0 5\r\nhello\r\nEND\r\n")
    assert client.ask(0xfffe, b"delete k\r\n") == frames(0xfffe, b"DELETED\r\n")
    assert client.ask(3, b"get k\r\n") == frames(3, b"END\r\n")
    assert client.ask(4, b"delete k\r\n") == frames(4, b"NOT_FOUND\r\n")


def test_one_response_per_command_and_per_key(client):
    client.ask(1, b"set a 0 0 1\r\nA\r\n")
    # a key that missed is a bare header, END rides on the last key
    assert client.ask(2, b"get zz a zz\r\n") == frames(
        2, None, b"VALUE a 0 1\r\nA\r\n", b"END\r\n")
    assert client.ask(3, b"get a\r\nversion\r\nmn\r\nbogus\r\n") == frames(
        3, b"VALUE a 0 1\r\nA\r\nEND\r\n", b"VERSION 1.6.18\r\n", b"MN\r\n", b"ERROR\r\n")
    got = client.ask(4, b"get a\r\nmn\r\nbogus\r\n")
    assert got == frames(4, b"VALUE a 0 1\r\nA\r\nEND\r\n", b"MN\r\n", b"ERROR\r\n")
    # noreply and a quiet meta miss send nothing, not even a header
    assert client.ask(5, b"set n 0 0 1 noreply\r\nB\r\nmg zz v q\r\nmg n v\r\n") == frames(
        5, b"VA 1\r\nB\r\n")


def test_multi_get_spans_many_datagrams(client):
    values = {f"key{i}".encode(): os.urandom(700 + 997 * i).hex().encode()[:700 + 997 * i]
              for i in range(12)}
    with RawConn(client.srv.addr) as c:
        for k, v in values.items():
            assert c.call(b"set %s 3 0 %d\r\n%s\r\n" % (k, len(v), v)) == b"STORED\r\n"
    keys = list(values)
    keys.insert(0, b"missing")
    keys.insert(6, b"missing")
    got = client.ask(77, b"get " + b" ".join(keys) + b"\r\n")
    want = []
    for i, k in enumerate(keys):
        r = b"" if k == b"missing" else b"VALUE %s 3 %d\r\n%s\r\n" % (k, len(values[k]), values[k])
        if i == len(keys) - 1:
            r += b"END\r\n"
        want.append(r)
    # the first key's miss heads the batch: a bare header; the later one,
    # behind a sent response, is not sent
    assert got == frames(77, None, *[w for w in want[1:] if w])
    assert len(got) > 40
    assert reassemble(got) == [b""] + [w for w in want[1:] if w]


def test_value_near_the_max_size(client):
    value = os.urandom(1000 * 1024)
    with RawConn(client.srv.addr) as c:
        assert c.call(b"set big 0 0 %d\r\n%s\r\n" % (len(value), value), timeout=10) == b"STORED\r\n"
    reply = b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
    want = frames(9, reply)
    got = client.ask(9, b"get big\r\n", expect=len(want))
    assert len(got) == len(want) == 736
    assert got == want


def test_malformed_headers_are_dropped(client):
    client.ask(1, b"set a 0 0 1\r\nA\r\n")
    for bad in (hdr(5)[:7], hdr(5), hdr(5, 0, 2) + b"get a\r\n", hdr(5, 1, 0) + b"get a\r\n",
                hdr(5, 0, 0) + b"get a\r\n"):
        client.send(bad)
        assert client.recv_all(first=0.3) == [], bad
    # the sequence number and the reserved field are not looked at
    hit = b"VALUE a 0 1\r\nA\r\nEND\r\n"
    client.send(hdr(6, 3, 1) + b"get a\r\n")
    assert client.recv_all() == frames(6, hit)
    client.send(hdr(7, 0, 1, 0xffff) + b"get a\r\n")
    assert client.recv_all() == frames(7, hit)
    # a partial line goes with its datagram
    client.send(hdr(8) + b"get a")
    assert client.recv_all(first=0.3) == []
    assert client.ask(9, b"get a\r\n") == frames(9, hit)


def test_quit_sends_a_bare_header(client):
    # after a transmit (a get's), quit's empty response heads its batch and
    # goes out as a bare header; behind version's it is finished unsent
    assert client.ask(1, b"get zz\r\nquit\r\nversion\r\n") == frames(1, b"END\r\n", None)


def test_empty_response_behind_a_sent_one_is_not_sent(udp_server):
    srv = udp_server()
    c = UdpClient(srv.addr)
    try:
        c.ask(1, b"set a 0 0 1\r\nA\r\n")
        assert c.ask(2, b"get a zz a\r\n") == frames(
            2, b"VALUE a 0 1\r\nA\r\n", b"VALUE a 0 1\r\nA\r\nEND\r\n")
        assert c.ask(3, b"set n 0 0 1 noreply\r\nB\r\nget zz a\r\n") == frames(
            3, None, b"VALUE a 0 1\r\nA\r\nEND\r\n")
        assert c.ask(4, b"version\r\nquit\r\n") == frames(4, b"VERSION 1.6.18\r\n")
    finally:
        c.close()


def test_many_clients_at_once(udp_server):
    srv = udp_server(threads=2)
    clients = [UdpClient(srv.addr, rcvbuf=1 << 20) for _ in range(64)]
    try:
        with RawConn(srv.addr) as c:
            for i in range(64):
                c.call(b"set c%d 0 0 %d\r\n%d\r\n" % (i, len(str(i)), i))
        for rnd in range(3):
            for i, u in enumerate(clients):
                u.send(hdr(1000 * rnd + i) + b"get c%d\r\n" % i)
            for i, u in enumerate(clients):
                got = u.recv_all(expect=1)
                v = b"%d" % i
                assert got == frames(1000 * rnd + i, b"VALUE c%d 0 %d\r\n%s\r\nEND\r\n" % (i, len(v), v))
    finally:
        for u in clients:
            u.close()


@pytest.mark.mpcache_only
def test_every_channel_answers(udp_server):
    srv = udp_server(threads=2)
    clients = [UdpClient(srv.addr, rcvbuf=1 << 20) for _ in range(32)]
    try:
        for i, u in enumerate(clients):
            assert u.ask(i, b"version\r\n", expect=1)[0][:8] == hdr(i)
    finally:
        for u in clients:
            u.close()
    ch = stats(srv.addr, b"channels")
    # each channel read datagrams on its own socket of the port
    assert int(ch["0:requests"]) > 0 and int(ch["1:requests"]) > 0, ch


def test_stats(udp_server):
    srv = udp_server(threads=2)
    u = UdpClient(srv.addr)
    try:
        u.ask(1, b"version\r\n")
        # one connection for every group: a closed one may still count a while
        with RawConn(srv.addr) as c:
            c.sock.settimeout(5)

            def group(name):
                c.send(b" ".join(filter(None, (b"stats", name))) + b"\r\n")
                out = b""
                while not out.endswith(b"END\r\n"):
                    out += c.sock.recv(65536)
                return out.decode().split("\r\n")

            def values(lines):
                return dict(ln.split(" ", 2)[1:] for ln in lines if ln.startswith("STAT "))

            assert values(group(b"settings"))["udpport"] == str(srv.port)
            s = values(group(b""))
            lines = group(b"conns")
        # memcached: a connection per UDP socket and thread; our one client
        assert int(s["curr_connections"]) == 1 + 2
        assert int(s["connection_structures"]) == 1 + 2 + 1
        assert int(s["bytes_read"]) >= 8 + len(b"version\r\n")
        udp_fds = [ln.split()[1].split(":")[0] for ln in lines if ln.endswith(":UDP UDP")]
        assert len(udp_fds) == 2
        for fd in udp_fds:
            assert f"STAT {fd}:addr udp:127.0.0.1:{srv.port}" in lines
            assert f"STAT {fd}:state conn_read" in lines
            assert not any(ln.startswith(f"STAT {fd}:listen_addr") for ln in lines)
        # asked over UDP, the socket answering shows the client
        got = b"".join(reassemble(u.ask(2, b"stats conns\r\n")))
        me = u.sock.getsockname()
        assert f"addr udp:127.0.0.1:{me[1]}\r\n".encode() in got
        assert b"state conn_parse_cmd" in got
    finally:
        u.close()


@pytest.mark.mpcache_only
def test_off_by_default(server_factory):
    srv = server_factory(threads=1)
    assert stats(srv.addr, b"settings")["udpport"] == "0"
    u = UdpClient(srv.addr)
    try:
        u.send(hdr(1) + b"version\r\n")
        assert u.recv_all(first=0.3) == []
    finally:
        u.close()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.mpcache_only
def test_rss_bounded_under_a_flood(udp_server):
    srv = udp_server(threads=2)
    with RawConn(srv.addr) as c:
        c.call(b"set v 0 0 20000\r\n" + b"v" * 20000 + b"\r\n")
    # a client that never reads: its replies are dropped by its kernel
    u = UdpClient(srv.addr, rcvbuf=4096)
    req = hdr(1) + b"get " + b"v " * 20 + b"zz\r\n" + b"mn\r\n" * 50 + b"set n 0 0 3\r\nab"

    def flood(n):
        for i in range(n):
            try:
                u.sock.sendto(req, srv.addr)
            except BlockingIOError:
                pass
            if i % 200 == 199:
                time.sleep(0.01)
    try:
        flood(600)
        time.sleep(0.5)
        before = rss_kb(srv.proc.pid)
        flood(3000)
        time.sleep(0.5)
        after = rss_kb(srv.proc.pid)
        assert after - before < 16 * 1024, (before, after)
        # and it still answers
        v = UdpClient(srv.addr)
        assert v.ask(2, b"version\r\n", expect=1)[0][:8] == hdr(2)
        v.close()
    finally:
        u.close()


def test_vv_log(udp_server):
    import re
    srv = udp_server(extra=("-vv",))
    u = UdpClient(srv.addr)
    try:
        assert u.ask(1, b"get a\r\n") == frames(1, b"END\r\n")
    finally:
        u.close()
    deadline = time.monotonic() + 5
    while b">" not in srv.output().encode() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [re.sub(r"\d+", "N", ln) for ln in srv.output().splitlines()]
    i = lines.index("<N send buffer was N, now N")
    assert lines[i + 1] == "<N server listening (udp)"
    assert "<N get a" in lines and ">N END" in lines
    # the UDP connection negotiates nothing (the launcher's TCP probe does)
    fd = re.search(r"<(\d+) server listening \(udp\)", srv.output()).group(1)
    assert f"{fd}: Client using the ascii protocol" not in srv.output()
    assert f"<{fd} get a" in srv.output()
    sizes = re.search(r"send buffer was \d+, now (\d+)", srv.output()).group(1)
    assert sizes == "268435456"


def test_get_past_the_output_mark(client):
    # mpcache sends a get's reply in parts once it passes 1 MiB; the datagrams
    # are memcached's, which builds it whole: the misses behind a part are
    # still behind a response already sent
    vals = {b"k0": b"A" * 600000, b"k1": b"B" * 600000, b"k2": b"C" * 10}
    with RawConn(client.srv.addr) as c:
        for k, v in vals.items():
            assert c.call(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v), timeout=10) == b"STORED\r\n"
    want = frames(5, *[b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in vals.items()],
                  b"END\r\n")
    got = client.ask(5, b"get k0 zz k1 zz k2 zz\r\n", expect=len(want))
    assert got == want


def test_counters(client):
    """bytes_read and bytes_written count whole datagrams, headers included
    (a multi-datagram request too, dropped after it is read); cmd_get and
    get_hits as over TCP."""
    with RawConn(client.srv.addr) as c:
        c.sock.settimeout(5)

        def stats_now():
            c.send(b"stats\r\n")
            out = b""
            while not out.endswith(b"END\r\n"):
                out += c.sock.recv(65536)
            return out, dict(ln.split(" ", 2)[1:] for ln in out.decode().split("\r\n")
                             if ln.startswith("STAT "))

        raw1, s1 = stats_now()
        sent = [hdr(1) + b"set k 0 0 2\r\nhi\r\n", hdr(2) + b"get k zz\r\n",
                hdr(3, 0, 2) + b"get k\r\n", hdr(4)]
        received = []
        for d in sent:
            client.send(d)
            received += client.recv_all(first=0.5)
        _, s2 = stats_now()
    read = sum(len(d) for d in sent if len(d) > 8) + len(b"stats\r\n")
    assert int(s2["bytes_read"]) - int(s1["bytes_read"]) == read
    written = len(raw1) + sum(len(d) for d in received)
    assert int(s2["bytes_written"]) - int(s1["bytes_written"]) == written
    assert (int(s2["cmd_get"]) - int(s1["cmd_get"]), int(s2["get_hits"]) - int(s1["get_hits"]),
            int(s2["get_misses"]) - int(s1["get_misses"]), int(s2["cmd_set"]) - int(s1["cmd_set"])) \
        == (2, 1, 1, 1)


def test_embedded_server_serves_udp():
    import mpcache
    from tests.support.servers import free_port
    port = free_port()
    with mpcache.Server(port=0, threads=2, udp_port=port) as srv:
        u = UdpClient(("127.0.0.1", port))
        try:
            assert u.ask(3, b"version\r\n", expect=1) == frames(3, b"VERSION 1.6.18\r\n")
        finally:
            u.close()
        assert srv.stats()["curr_connections"] == 2   # the two channels' UDP sockets


def _random_datagram(rng):
    """1 to 6 text and meta commands, ending with mn (its MN marks the end of
    the replies)."""
    keys = [b"a", b"b", b"c", b"d", b"e"]

    def key():
        return b"k" * 251 if rng.random() < 0.02 else rng.choice(keys)

    def value():
        n = rng.choice([0, 1, 5, 100, 1391, 1392, 1393, 3000])
        return bytes(rng.choice(b"abcdefgh") for _ in range(n))

    def nr():
        return b" noreply" if rng.random() < 0.25 else b""

    out = []
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.25:
            v = value()
            cmd = rng.choice([b"set", b"add", b"replace", b"append", b"prepend"])
            n = len(v) - 2 if len(v) > 2 and rng.random() < 0.05 else len(v)
            out.append(b"%s %s %d 0 %d%s\r\n%s\r\n" % (cmd, key(), rng.randint(0, 9), n, nr(), v))
        elif r < 0.5:
            out.append(b"get " + b" ".join(key() for _ in range(rng.randint(1, 5))) + b"\r\n")
        elif r < 0.55:
            out.append(b"delete %s%s\r\n" % (key(), nr()))
        elif r < 0.6:
            out.append(b"%s %s %d%s\r\n" % (rng.choice([b"incr", b"decr"]), key(),
                                              rng.randint(0, 99), nr()))
        elif r < 0.65:
            out.append(b"touch %s 0%s\r\n" % (key(), nr()))
        elif r < 0.7:
            cmd = rng.choice([b"gat 0", b"gats 0", b"gets"])
            out.append(cmd + b" " + b" ".join(key() for _ in range(rng.randint(1, 3))) + b"\r\n")
        elif r < 0.72:
            v = value()
            out.append(b"cas %s 0 0 %d %d%s\r\n%s\r\n" % (key(), len(v), rng.randint(1, 40), nr(), v))
        elif r < 0.8:
            out.append(b"mg %s %s\r\n" % (key(), rng.choice([b"v", b"v q", b"k v", b"s f", b""])))
        elif r < 0.85:
            v = value()
            out.append(b"ms %s %d%s\r\n%s\r\n" % (key(), len(v), rng.choice([b"", b" q"]), v))
        elif r < 0.88:
            out.append(b"md %s%s\r\n" % (key(), rng.choice([b"", b" q"])))
        elif r < 0.9:
            out.append(b"mn\r\n")
        elif r < 0.93:
            out.append(rng.choice([b"version\r\n", b"bogus\r\n", b"\r\n", b"verbosity 1 noreply\r\n"]))
        else:
            out.append(b"ma %s\r\n" % key())
    return b"".join(out) + b"mn\r\n"


def _replies(u, rid, body):
    u.send(hdr(rid) + body)
    out = []
    u.sock.settimeout(3)
    try:
        while not out or out[-1] != hdr(rid) + b"MN\r\n":
            out.append(u.sock.recv(70000))
    except socket.timeout:
        pass
    return out


@pytest.mark.mpcache_only
def test_differential_against_memcached(backend):
    """Seeded datagrams of mixed commands (MPCACHE_UDP_SEED picks another
    stream): every reply datagram, header and all, the same as memcached's."""
    import random
    from tests.support.servers import start_server
    ref = start_server("memcached", threads=1, udp=True)
    ours = start_server(backend, threads=1, udp=True)
    a, b = UdpClient(ref.addr), UdpClient(ours.addr)
    try:
        rng = random.Random(int(os.environ.get("MPCACHE_UDP_SEED", "20261206")))
        for i in range(400):
            body = _random_datagram(rng)
            want = _replies(a, i, body)
            got = _replies(b, i, body)
            assert got == want, (i, body)
    finally:
        a.close()
        b.close()
        ref.stop()
        ours.stop()


def test_ipv6(udp_server):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    srv = udp_server(extra=("-l", "::1"))
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        u.settimeout(5)
        u.sendto(hdr(6) + b"version\r\n", ("::1", srv.port))
        assert u.recv(2048) == hdr(6) + b"VERSION 1.6.18\r\n"
        u.sendto(hdr(7) + b"stats conns\r\n", ("::1", srv.port))
        got = u.recv(65536)
        me = u.getsockname()[1]
        assert f"addr udp6:[::1]:{me}\r\n".encode() in got
        assert f"listen_addr udp6:[::1]:{srv.port}\r\n".encode() in got
    finally:
        u.close()
