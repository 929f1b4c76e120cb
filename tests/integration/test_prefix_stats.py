"""Per-prefix stats ("stats detail on|off|dump", -D), side by side with
memcached 1.6.18 on every backend: the PREFIX lines byte for byte, in
memcached's order (its hash buckets), for a scripted sequence."""

import pytest

from tests.support.raw import RawConn

SCRIPT = [
    b"stats detail dump\r\n",
    b"stats detail on\r\n",
    b"set a:1 0 0 1\r\nx\r\n",
    b"set a:2 0 0 1\r\nx\r\n",
    b"add a:1 0 0 1\r\nx\r\n",
    b"get a:1 a:2 a:3 b:1 nocolon\r\n",
    b"gets a:1\r\n",
    b"gat 0 a:2 c:9\r\n",
    b"delete a:1\r\n",
    b"delete zz:1\r\n",
    b"append b:x 0 0 1\r\ny\r\n",
    b"cas b:x 0 0 1 1\r\ny\r\n",
    b"incr a:2 1\r\n",
    b"touch a:2 0\r\n",
    b"mg a:2 v\r\n",
    b"ms m:1 1\r\nx\r\n",
    b"set too:big 0 0 -1\r\n",
    b"get :empty\r\n",
    b"set \x01weird/:k 0 0 1\r\nx\r\n",
    b"stats detail dump\r\n",
    b"stats detail off\r\n",
    b"get a:2\r\n",
    b"stats detail dump\r\n",
    b"stats detail\r\n",
    b"stats detail bogus\r\n",
    b"stats settings\r\n",
]


def run(srv, script):
    out = []
    with RawConn(srv.addr) as c:
        for line in script:
            out.append(c.call(line))
    return out


def settings_lines(reply):
    return [l for l in reply.split(b"\r\n") if l.startswith((b"STAT stat_key_prefix",
                                                             b"STAT detail_enabled"))]


def test_detail_script_matches_memcached(server_factory, backend):
    srv = server_factory(threads=2)
    got = run(srv, SCRIPT)
    assert got[0] == b"END\r\n"
    dump = got[SCRIPT.index(b"stats detail dump\r\n", 1)]
    assert dump.endswith(b"END\r\n")
    # every prefix the script touched while detail was on; not m: (meta),
    # nor too: (a set line refused before it is counted)
    names = sorted(l.split(b" ")[1] for l in dump.split(b"\r\n") if l.startswith(b"PREFIX "))
    assert names == sorted([b"a", b"b", b"c", b"zz", b"", b"\x01weird/"]), dump
    assert settings_lines(got[-1])[1] == b"STAT detail_enabled no"
    EXPECTED[backend] = got


EXPECTED = {}


def test_detail_same_bytes_on_every_backend(backend):
    """After the script ran on each backend: mpcache's replies are memcached's."""
    if "memcached" not in EXPECTED or backend == "memcached":
        pytest.skip("needs memcached's run first")
    ref = EXPECTED["memcached"]
    got = EXPECTED.get(backend)
    if got is None:
        pytest.skip("this backend's run failed")
    for line, a, b in zip(SCRIPT, ref, got):
        if line == b"stats settings\r\n":   # ports and such differ
            a, b = settings_lines(a), settings_lines(b)
        assert b == a, f"{backend}: {line!r}"


def test_dash_D_sets_the_delimiter_and_turns_detail_on(server_factory):
    srv = server_factory(threads=1, extra=("-D", "/"))
    got = run(srv, [b"set x/1 0 0 1\r\nx\r\n", b"get x/1 y:1 x/2\r\n", b"stats detail dump\r\n",
                    b"stats settings\r\n", b"stats reset\r\n", b"stats detail dump\r\n"])
    assert got[2] == b"PREFIX x get 2 hit 1 set 1 del 0\r\nEND\r\n"
    assert settings_lines(got[3]) == [b"STAT stat_key_prefix /", b"STAT detail_enabled yes"]
    assert got[5] == b"END\r\n"


def test_detail_dump_streams_past_the_output_mark(server_factory):
    """Many prefixes: the dump is whole and each prefix appears once."""
    srv = server_factory(threads=1)
    n = 20000
    with RawConn(srv.addr, timeout=30) as c:
        assert c.call(b"stats detail on\r\n") == b"OK\r\n"
        batch = b"".join(b"get p%07d:x\r\n" % i for i in range(n))
        c.call(batch, timeout=60)
        dump = c.call(b"stats detail dump\r\n", timeout=60)
    lines = dump.split(b"\r\n")
    assert lines[-2:] == [b"END", b""]
    prefixes = [l.split(b" ")[1] for l in lines if l.startswith(b"PREFIX ")]
    assert len(prefixes) == n and len(set(prefixes)) == n
