"""-vv and -vvv (issue 13, item 7): memcached's lines on stderr.

A scripted sequence of commands goes to memcached 1.6.18 -vv and to mpcache
-vv on both engines; the connection lines each writes ("<N new
auto-negotiating client connection", "N: Client using the ascii protocol",
"<N set a 0 0 1", ">N STORED", ">N sending key a", "<N connection
closed.", ...) are the same once the connection numbers are replaced by the
order in which they first appear (memcached numbers a connection by its
descriptor; mpcache by the number "stats conns" shows, which on io_uring is
not a process descriptor).  Keys are data: a key full of printf directives
is logged as it is.
"""

import re
import time

import pytest

from tests.support.servers import BACKENDS, ServerProcess, read_captured, selected_backends

# A line about a connection: "<N ...", ">N ...", "N: ...", "Closing idle fd N".
CONN_LINE = re.compile(rb"^(?:([<>])(\d+)( .*)?|(\d+)(: .*)|(Closing idle fd )(\d+))$")
# memcached's connection states (memcached.c state_text)
STATES = {b"conn_listening", b"conn_new_cmd", b"conn_waiting", b"conn_read", b"conn_parse_cmd",
          b"conn_write", b"conn_nread", b"conn_swallow", b"conn_closing", b"conn_mwrite",
          b"conn_closed", b"conn_watch", b"conn_io_queue"}

NASTY_KEY = b"k%s%n%x%%%p"

# (bytes to send, the reply that ends it) on one connection, in order
SCRIPT = [
    (b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
    (b"get a\r\n", b"END\r\n"),
    (b"get a nothere a\r\n", b"END\r\n"),
    (b"gets a\r\n", b"END\r\n"),
    (b"set " + NASTY_KEY + b" 5 0 2\r\nok\r\n", b"STORED\r\n"),
    (b"get " + NASTY_KEY + b"\r\n", b"END\r\n"),
    (b"add a 0 0 1\r\ny\r\n", b"NOT_STORED\r\n"),
    (b"replace a 0 0 1\r\nz\r\n", b"STORED\r\n"),
    (b"append a 0 0 1\r\nq\r\n", b"STORED\r\n"),
    (b"prepend nothere 0 0 1\r\nq\r\n", b"NOT_STORED\r\n"),
    (b"cas a 0 0 1 999999\r\nc\r\n", b"EXISTS\r\n"),
    (b"cas nothere 0 0 1 1\r\nc\r\n", b"NOT_FOUND\r\n"),
    (b"set n 0 0 1\r\n5\r\n", b"STORED\r\n"),
    (b"incr n 3\r\n", b"8\r\n"),
    (b"decr n 10\r\n", b"0\r\n"),
    (b"incr nothere 1\r\n", b"NOT_FOUND\r\n"),
    (b"incr a 1\r\n", b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
    (b"touch a 100\r\n", b"TOUCHED\r\n"),
    (b"gat 100 a nothere\r\n", b"END\r\n"),
    (b"gat x a\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"delete a\r\n", b"DELETED\r\n"),
    (b"delete a\r\n", b"NOT_FOUND\r\n"),
    (b"set q 0 0 1 noreply\r\nx\r\nmn\r\n", b"MN\r\n"),
    (b"get " + b"k" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"bogus command\r\n", b"ERROR\r\n"),
    (b"mg n v\r\n", b"VA 1\r\n0\r\n"),
    (b"ms m 2\r\nhi\r\n", b"HD\r\n"),
    (b"mg nothere v\r\n", b"EN\r\n"),
    (b"md m q\r\nmn\r\n", b"MN\r\n"),
    (b"mg n zz\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    (b"me n\r\n", b"\r\n"),
    (b"me nothere\r\n", b"EN\r\n"),
    (b"set big 0 0 3\r\nabcde\r\n", b"ERROR\r\n"),
    (b"set huge 0 0 2000000\r\n" + b"h" * 2000000 + b"\r\n",
     b"SERVER_ERROR object too large for cache\r\n"),
    (b"stats\r\n", b"END\r\n"),
    (b"stats detail on\r\n", b"OK\r\n"),
    (b"stats detail dump\r\n", b"END\r\n"),
    (b"stats nosuchgroup\r\n", b"ERROR\r\n"),
    (b"stats reset\r\n", b"RESET\r\n"),
    (b"version\r\n", b"VERSION 1.6.18\r\n"),
    (b"flush_all\r\n", b"OK\r\n"),
    (b"verbosity 1\r\n", b"OK\r\n"),
    (b"get a\r\n", b"END\r\n"),          # not logged any more
    (b"verbosity 2\r\n", b"OK\r\n"),     # nor this one: the level was 1
    (b"get a\r\n", b"END\r\n"),          # logged again
    (b"quit\r\n", b""),
]


def _backends():
    names = selected_backends()
    if "memcached" not in names or len(names) < 2:
        pytest.skip("needs memcached and an mpcache backend")
    return names


def _run(sock, data, until, timeout=10):
    sock.sendall(data)
    if not until:
        sock.settimeout(timeout)
        assert sock.recv(4096) == b""     # quit: closed
        return
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(until):
        assert time.monotonic() < deadline, (data[:60], buf[-200:])
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(1 << 20)
        assert chunk, (data[:60], buf[-200:])
        buf += chunk


def _log(srv):
    """Everything the server wrote (srv.output() keeps only the end)."""
    return read_captured(srv._stderr)


def _wait_log(srv, pattern, count=1, timeout=10):
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, _log(srv), re.M)) < count:
        assert time.monotonic() < deadline, (pattern, _log(srv)[-2000:])
        time.sleep(0.02)


def _conn_lines(text):
    """The connection lines, numbers replaced by their order of appearance."""
    numbers = {}

    def n(num):
        return b"#%d" % numbers.setdefault(num, len(numbers) + 1)

    out = []
    for line in text.split(b"\n"):
        m = CONN_LINE.match(line)
        if not m or line.endswith(b"server listening (auto-negotiate)") \
                or line.endswith(b"server listening (ascii)"):
            continue
        if m.group(1):
            out.append(m.group(1) + n(m.group(2)) + (m.group(3) or b""))
        elif m.group(4):
            out.append(n(m.group(4)) + m.group(5))
        else:
            out.append(m.group(6) + n(m.group(7)))
    return out


def _session(name, flags, script, also_close=True, logged=True):
    """Runs the script on one connection (then opens and closes a silent
    one) against a fresh server; returns the normalised lines of those
    connections and the whole log."""
    srv = ServerProcess(BACKENDS[name], threads=1, extra=tuple(flags))
    with srv:
        closed = b"connection closed\\.$"
        if logged:
            # the start-up probe's connection (servers.py) is logged too
            _wait_log(srv, closed, 1)
        start = len(_log(srv))
        with srv.connect() as s:
            for data, until in script:
                _run(s, data, until)
        if not logged:
            time.sleep(0.5)
            return _conn_lines(_log(srv)[start:]), _log(srv)
        _wait_log(srv, closed, 2)
        if also_close:
            # a connection that never sends: opened and closed, no protocol
            with srv.connect() as s:
                s.sendall(b"")
            _wait_log(srv, closed, 3)
        text = _log(srv)
    return _conn_lines(text[start:]), text


def test_vv_lines_match_memcached():
    names = _backends()
    got = {name: _session(name, ("-vv",), SCRIPT) for name in names}
    ref, raw = got.pop("memcached")
    assert b"<#1 set a 0 0 1" in ref and b">#1 sending key " + NASTY_KEY in ref
    assert re.search(rb"^<\d+ server listening \(auto-negotiate\)$", raw, re.M)
    for name, (lines, text) in got.items():
        assert lines == ref, name
        # the listeners, one per channel and address
        assert re.search(rb"^<\d+ server listening \(auto-negotiate\)$", text, re.M), name
        assert re.search(rb"^slab class   1: chunk size +\d+ perslab +\d+$", text, re.M), name


def test_ascii_binding_logs_ascii_connections():
    """-B ascii: "<N new ascii client connection." and nothing negotiated."""
    names = _backends()
    script = [(b"get a\r\n", b"END\r\n"), (b"quit\r\n", b"")]
    got = {name: _session(name, ("-vv", "-B", "ascii"), script, also_close=False)
           for name in names}
    ref = got.pop("memcached")[0]
    assert ref == [b"<#1 new ascii client connection.", b"<#1 get a", b">#1 END",
                   b"<#1 quit", b"<#1 connection closed."]
    for name, (lines, text) in got.items():
        assert lines == ref, name
        assert re.search(rb"^<\d+ server listening \(ascii\)$", text, re.M), name


def test_v_logs_no_connection_lines():
    for name in _backends():
        lines, _ = _session(name, ("-v",), SCRIPT[:3], logged=False)
        assert lines == [], name


def test_vvv_adds_lookups_and_states():
    """-vvv: memcached's lookup lines for the retrieval, touch, delete and
    arithmetic commands, and state changes named as memcached names them
    (mpcache's connection goes through fewer states, so they are not
    compared line by line)."""
    names = _backends()
    script = [
        (b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
        (b"get a nothere\r\n", b"END\r\n"),
        (b"touch a 0\r\n", b"TOUCHED\r\n"),
        (b"incr nothere 1\r\n", b"NOT_FOUND\r\n"),
        (b"delete a\r\n", b"DELETED\r\n"),
        (b"quit\r\n", b""),
    ]
    got = {name: _session(name, ("-vvv",), script, also_close=False) for name in names}

    def lookups(text):
        # those of the commands above but the set (memcached's store looks
        # its key up too)
        out, after_set = [], False
        for line in text.split(b"\n"):
            if re.match(rb"^<\d+ ", line):
                after_set = line.split(b" ", 1)[1].startswith(b"set ")
            elif line.startswith((b"> FOUND KEY", b"> NOT FOUND")) and not after_set:
                out.append(line)
        return out

    ref_lines, ref_text = got.pop("memcached")
    want = lookups(ref_text)
    assert want == [b"> FOUND KEY a", b"> NOT FOUND nothere", b"> FOUND KEY a",
                    b"> NOT FOUND nothere", b"> FOUND KEY a"]
    vv = [line for line in ref_lines if not re.match(rb"^#\d+: going from", line)]
    for name, (lines, text) in got.items():
        assert lookups(text) == want, name
        # what -vv shows is all there, in order
        assert [line for line in lines if not re.match(rb"^#\d+: going from", line)] == vv, name
        states = re.findall(rb"^\d+: going from (\w+) to (\w+)$", text, re.M)
        assert states and all(a in STATES and b in STATES and a != b for a, b in states), name
        assert (b"conn_parse_cmd", b"conn_nread") in states, name


@pytest.mark.parametrize("name", ["mpcache-epoll", "mpcache-uring"])
def test_idle_kick_is_logged(name):
    if name not in selected_backends():
        pytest.skip(f"{name} not selected")
    srv = ServerProcess(BACKENDS[name], threads=1, extra=("-vv", "-o", "idle_timeout=1"))
    with srv:
        _wait_log(srv, b"connection closed\\.$")
        with srv.connect(timeout=15) as s:
            s.sendall(b"version\r\n")
            assert s.recv(64).startswith(b"VERSION")
            assert s.recv(64) == b""     # kicked
        _wait_log(srv, b"connection closed\\.$", 2)
        lines = _conn_lines(_log(srv))
    assert lines[-3:] == [b">#1 VERSION 1.6.18", b"Closing idle fd #1", b"<#1 connection closed."]


def test_verbosity_command_turns_logging_on(server_factory, backend):
    srv = server_factory(threads=2)
    start = len(_log(srv))
    with srv.connect() as s:
        _run(s, b"get a\r\n", b"END\r\n")
        _run(s, b"verbosity 2\r\n", b"OK\r\n")
        _run(s, b"get a\r\n", b"END\r\n")
    # this connection's lines only: the start-up check's connection may be
    # closed after the level rose, and log its close too
    own = re.search(rb"^<(\d+) get a$", _log(srv)[start:], re.M).group(1)
    _wait_log(srv, rb"^<" + own + rb" connection closed\.$")
    lines = [line for line in _log(srv)[start:].split(b"\n")
             if re.match(rb"^[<>]" + own + rb" ", line)]
    # the connection was opened and negotiated before the level rose; the
    # OK is written once it has
    assert lines == [b">%s OK" % own, b"<%s get a" % own, b">%s END" % own,
                     b"<%s connection closed." % own]
