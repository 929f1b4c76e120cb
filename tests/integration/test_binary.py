"""The binary protocol beside memcached 1.6.18: memccapable -b, input in
pieces, malformed headers, bodies past -I, -B binary and -B ascii, stats.

Each test sends the same bytes to a memcached and to the backend and
compares what comes back, byte for byte (cas uniques renamed in the order
each server first showed them; tests/differential/test_binary_differential.py
runs the random streams)."""

import re
import socket
import ssl
import struct
import subprocess
import time

import pytest

from tests.support.certs import SUITE_TLS, suite_wrap
from tests.support.binproto import (
    OP, BinConn, arith_extras, request, split_packets, store_extras, touch_extras)
from tests.support.raw import RawConn
from tests.support.servers import BACKENDS, ServerProcess, read_captured

QUIET_MEMCACHED = ("-o", "no_lru_crawler,no_lru_maintainer")


def start(backend, extra=(), **kw):
    more = QUIET_MEMCACHED if not BACKENDS[backend].is_mpcache else ()
    srv = ServerProcess(BACKENDS[backend], extra=tuple(more) + tuple(extra), **kw)
    srv.start()
    return srv


@pytest.fixture
def pair(backend):
    """start(extra=..., **flags) -> (memcached, the backend's server), both
    with those flags; stopped after the test."""
    started = []

    def make(extra=(), **kw):
        ref = start("memcached", extra, **kw)
        started.append(ref)
        cand = start(backend, extra, **kw)
        started.append(cand)
        return ref, cand

    yield make
    for srv in started:
        srv.stop()


def normalize(raw):
    """A byte stream of reply packets with cas uniques renamed; a tail that
    is not a whole packet is kept as is."""
    packets, rest = split_packets(raw)
    names = {}
    out = []
    for p in packets:
        cas = names.setdefault(p.cas, len(names) + 1) if p.cas else 0
        out.append(p.raw[:16] + struct.pack(">Q", cas) + p.raw[24:])
    return out, rest


def exchange(addr, data, pieces=None, pause=0.003, to_eof=False, timeout=3.0):
    """Sends data (cut at pieces, with a pause between writes) and returns
    every byte received until EOF, or until nothing came for `timeout`."""
    s = socket.create_connection(addr, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = suite_wrap(s)
    try:
        last = 0
        for cut in list(pieces or []) + [len(data)]:
            if cut > last:
                s.sendall(data[last:cut])
                if pieces:
                    time.sleep(pause)
                last = cut
        buf = b""
        eof = False
        while True:
            try:
                chunk = s.recv(1 << 20)
            except socket.timeout:
                break
            except (ConnectionResetError, ssl.SSLEOFError):
                eof = True
                break
            if not chunk:
                eof = True
                break
            buf += chunk
            if not to_eof:
                s.settimeout(0.3)
        return buf, eof
    finally:
        s.close()


def same_on_both(ref, cand, data, **kw):
    a_raw, a_eof = exchange(ref.addr, data, **kw)
    b_raw, b_eof = exchange(cand.addr, data, **kw)
    a = normalize(a_raw) + (a_eof,)
    b = normalize(b_raw) + (b_eof,)
    assert b == a, f"memcached: {a}\n{cand.name}: {b}"
    return a


# ---- memccapable -b ----

def run_memccapable(srv):
    return subprocess.run(["memccapable", "-h", "127.0.0.1", "-p", str(srv.port), "-b", "-t", "5"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(SUITE_TLS, reason="memccapable speaks no TLS")
def test_memccapable_binary(pair):
    ref, cand = pair()
    want = run_memccapable(ref)
    got = run_memccapable(cand)
    assert want.returncode == 0 and "All tests passed" in want.stdout, want.stdout + want.stderr
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout == want.stdout


# ---- input in pieces ----

def test_every_header_cut(pair):
    """A get cut at each byte of its header, then a set cut at each byte of
    header, extras, key and the start of its value."""
    ref, cand = pair()
    setup = request("set", b"kk", store_extras(7, 0), b"v" * 300, opaque=1)
    same_on_both(ref, cand, setup)
    get = request("getk", b"kk", opaque=2)
    for cut in range(1, len(get)):
        out = same_on_both(ref, cand, get, pieces=[cut])
        assert len(out[0]) == 1
    st = request("set", b"k2", store_extras(1, 0), b"x" * 40, opaque=3) + request("get", b"k2")
    for cut in range(1, 24 + 8 + 2 + 5):
        same_on_both(ref, cand, st, pieces=[cut])


def test_large_value_in_pieces(pair):
    """Values of 100 KiB and of nearly -I arrive in many writes, pipelined
    with quiet requests; both are read back whole."""
    ref, cand = pair()
    big = bytes(range(256)) * 400
    huge = b"h" * (1024 * 1024 - 400)
    data = (request("setq", b"big", store_extras(3, 0), big, opaque=1)
            + request("set", b"huge", store_extras(0, 0), huge, opaque=2)
            + request("getq", b"missing", opaque=3)
            + request("getk", b"big", opaque=4)
            + request("get", b"huge", opaque=5)
            + request("noop", opaque=6))
    cuts = list(range(7, len(data), 37001)) + [len(data) - 30]
    out = same_on_both(ref, cand, data, pieces=sorted(cuts), pause=0.001)
    packets = out[0]
    assert [p[1] for p in packets] == [OP["set"], OP["getk"], OP["get"], OP["noop"]]
    assert packets[1].endswith(big) and packets[2].endswith(huge)


def test_byte_by_byte(pair):
    ref, cand = pair()
    data = (request("set", b"a", store_extras(0, 0), b"hello", opaque=1)
            + request("incr", b"n", arith_extras(5, 10, 0), opaque=2)
            + request("getk", b"a", opaque=3))
    same_on_both(ref, cand, data, pieces=list(range(1, len(data))), pause=0.001)


# ---- malformed requests ----

def good_prefix():
    return (request("set", b"p", store_extras(0, 0), b"v", opaque=10)
            + request("get", b"p", opaque=11))


MALFORMED = {
    # memcached closes at once: what it had not sent yet is lost too
    "bad_magic": bytes([0x81]) + bytes(23),
    "zero_magic": bytes(24),
    "text_after_binary": b"get p\r\n" + bytes(17),
    # an error, then the connection is closed once it is sent
    "keylen_over_body": request("get", b"abcd", keylen=4, bodylen=3),
    "key_and_extras_over_body": request("set", b"ab", store_extras(), b"", bodylen=9),
    "key_too_long": request("get", b"x" * 251),
    "set_short_extras": request("set", b"k", touch_extras(0), b"v"),
    "set_no_key": request("set", b"", store_extras(), b"v"),
    "get_with_extras": request("get", b"k", touch_extras(0)),
    "get_no_key": request("get", b""),
    "noop_with_body": request("noop", b"", b"", b"xy"),
    "version_with_key": request("version", b"k"),
    "quit_with_body": request("quit", b"", b"", b"x"),
    "flush_extras_8": request("flush", b"", store_extras()),
    "incr_short_extras": request("incr", b"k", arith_extras()[:12]),
    "touch_no_extras": request("touch", b"k"),
    "delete_with_value": request("delete", b"k", b"", b"v"),
    "append_with_extras": request("append", b"k", touch_extras(0), b"v"),
    "stat_with_extras": request("stat", b"", touch_extras(0)),
    "sasl_list_with_key": request("sasl_list", b"k"),
    "sasl_auth_no_key": request("sasl_auth", b"", b"", b"x"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(pair, name):
    ref, cand = pair()
    same_on_both(ref, cand, good_prefix() + MALFORMED[name] + request("noop", opaque=12),
                 to_eof=True)


def test_unknown_opcode_swallows_its_body_after_extras_and_key(pair):
    """memcached swallows an unknown opcode's whole body length after the
    extras and key it already read: the bytes of the next request go too."""
    ref, cand = pair()
    verbosity = request("verbosity", b"", touch_extras(1))     # 4 bytes more swallowed
    follow = request("noop", opaque=5)
    same_on_both(ref, cand, verbosity + b"XXXX" + follow)
    same_on_both(ref, cand, request(0x30, b"key", b"", b"body") + b"1234567" + follow)
    same_on_both(ref, cand, request(0xfe, b"", b"", b"z" * 5000) + follow,
                 pieces=[30, 2000], pause=0.002)


# ---- bodies past -I ----

def test_oversized_body(pair):
    """A set of more than -I is answered too large, its body swallowed as it
    arrives, the old value removed; the connection goes on."""
    ref, cand = pair(max_item_size="1m")
    old = request("set", b"big", store_extras(0, 0), b"old", opaque=1)
    too = request("set", b"big", store_extras(0, 0), b"x" * (2 * 1024 * 1024), opaque=2)
    after = request("getk", b"big", opaque=3) + request("version", opaque=4)
    out = same_on_both(ref, cand, old + too + after,
                       pieces=list(range(100, len(old + too), 300000)), pause=0.002)
    statuses = [struct.unpack_from(">H", p, 6)[0] for p in out[0]]
    assert statuses == [0, 0x03, 0x01, 0]
    # append and the quiet form alike, and a body length past 2^31
    out = same_on_both(ref, cand, request("appendq", b"big", b"", b"y" * (1024 * 1024 + 10))
                       + request("noop", opaque=9))
    assert [struct.unpack_from(">H", p, 6)[0] for p in out[0]] == [0x03, 0]
    same_on_both(ref, cand, request("set", b"neg", store_extras(), b"", bodylen=0x80000010)
                 + bytes(16) + request("noop", opaque=9), to_eof=False)


# ---- -B ----

def test_binding_binary(pair):
    """-B binary: a text client is read as binary (24 bytes, then a bad
    magic closes it); binary requests work."""
    ref, cand = pair(extra=("-B", "binary"))
    same_on_both(ref, cand, b"get foo\r\n" + bytes(15), to_eof=True)
    same_on_both(ref, cand, request("version", opaque=1) + request("noop", opaque=2))
    for srv in (ref, cand):
        with BinConn(srv.addr) as c:
            stats = c.call(request("stat", b"settings"))
        found = {p.key: p.value for p in stats if p.key}
        assert found[b"binding_protocol"] == b"binary", srv.name


def test_binding_ascii(pair):
    """-B ascii: a first byte of 0x80 is a text line like any other."""
    ref, cand = pair(extra=("-B", "ascii"))
    same_on_both(ref, cand, request("version") + b"\r\nversion\r\n")


def test_auto_negotiates_per_connection(pair):
    ref, cand = pair()
    for srv in (ref, cand):
        with RawConn(srv.addr) as t:
            assert t.call(b"set a 5 0 2\r\nhi\r\n") == b"STORED\r\n"
        with BinConn(srv.addr) as c:
            (p,) = c.call(request("getk", b"a"))
            assert (p.status, p.extras, p.key, p.value) == (0, b"\0\0\0\5", b"a", b"hi")


# ---- stat ----

def stat_names_text(srv, group=b""):
    with RawConn(srv.addr) as t:
        lines = t.call(b"stats" + (b" " + group if group else b"") + b"\r\n")
    return [ln.split(b" ")[1] for ln in lines.split(b"\r\n") if ln.startswith(b"STAT ")]


def test_stat_groups_as_packets(pair):
    """A binary stat lists what the text stats lists, one packet per line
    and an empty one to end; reset, detail and unknown groups as memcached."""
    ref, cand = pair()
    for group in (b"", b"settings", b"items", b"slabs", b"sizes"):
        for srv in (ref, cand):
            with BinConn(srv.addr) as c:
                c.call(request("set", b"x", store_extras(), b"1"))
                packets = c.call(request("stat", group, opaque=7))
            assert packets[-1].raw == bytes([0x81, 0x10]) + bytes(10) + b"\0\0\0\7" + bytes(8)
            assert all(p.opaque == 7 and p.status == 0 for p in packets)
            names = [p.key for p in packets[:-1]]
            assert names == stat_names_text(srv, group), (srv.name, group)
    for group in (b"reset", b"detail on", b"detail off", b"detail dump", b"detail",
                  b"conns", b"nosuch", b"settingsXYZ"):
        data = request("stat", group, opaque=3) + request("noop", opaque=4)
        if group == b"settingsXYZ":
            # memcached compares "settings" as a prefix
            for srv in (ref, cand):
                got, _ = exchange(srv.addr, data)
                keys = [p.key for p in split_packets(got)[0]]
                assert keys[:-2] == stat_names_text(srv, b"settings"), srv.name
            continue
        same_on_both(ref, cand, data)


# ---- -vv ----

LOG_SCRIPT = (request("set", b"a", store_extras(1, 0), b"v", opaque=1)
              + request("get", b"a", opaque=2) + request("getq", b"zz", opaque=3)
              + request("getk", b"zz", opaque=4) + request("delete", b"zz", opaque=5)
              + request("incr", b"n", arith_extras(2 ** 64 - 1, 5, 0xffffffff), opaque=6)
              + request("decr", b"n", arith_extras(1, 5, 0), opaque=7)
              + request("setq", b"b", store_extras(0, 0), b"xy", opaque=8)
              + request("add", b"b", store_extras(0, 0), b"z", opaque=9)
              + request("append", b"b", b"", b"zz", opaque=10)
              + request("touch", b"b", touch_extras(10), opaque=11)
              + request("gatk", b"b", touch_extras(10), opaque=12)
              + request("stat", b"nosuch", opaque=13)
              + request("version", opaque=14) + request(0x1b, b"", b"", b"", opaque=15))


def vv_lines(srv, data, start):
    """The log lines of one connection sending data, from offset start;
    connection numbers replaced by N."""
    with BinConn(srv.addr) as c:
        c.send(data)
        c.read_to_eof(timeout=1.0)
    deadline = time.monotonic() + 5
    while True:
        log = read_captured(srv._stderr)[start:]
        if b"connection closed." in log or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return [re.sub(rb"close connection \d+", b"close connection N",
                   re.sub(rb"^([<>]?)\d+(:| )", rb"\1N\2", line))
            for line in log.split(b"\n") if line and not line.startswith(b"slab class")]


def log_size(srv):
    return len(read_captured(srv._stderr))


@pytest.mark.parametrize("script", ["commands", "protocol_error", "bad_magic"])
def test_vv_lines(pair, script):
    """-vv logs each request's header and each reply's, and memcached's
    lines per command, as memcached does."""
    ref, cand = pair(extra=("-vv",), threads=1)
    data = {"commands": LOG_SCRIPT + request("quit", opaque=16),
            "protocol_error": request("noop", opaque=1) + request("get", b"k", touch_extras(0)),
            "bad_magic": request("noop", opaque=1) + bytes(24)}[script]
    time.sleep(0.3)
    want = vv_lines(ref, data, log_size(ref))
    got = vv_lines(cand, data, log_size(cand))
    assert len(want) > 10 and got == want
