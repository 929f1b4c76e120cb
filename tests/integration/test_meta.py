"""The meta protocol (mg, ms, md, ma, mn, me) as memcached 1.6.18 answers it.

Every test runs against the real memcached too, so each expectation here is
memcached's own reply.  cas uniques differ between servers: tests that see
them check relations (the same unique in gets and mg, a new one after a
change) instead of numbers, and TTLs are read with one second of slack
where the clock may tick between two requests.

The stale-while-revalidate tests use a server with two worker threads
(channels) and several connections, and on mpcache check that the
connections really are served by different channels.
"""

import re
import socket
import threading
import time

import pytest

from tests.support.raw import MARKER, RawConn

LONG_KEY = b"k" * 251
OPAQUE_33 = b"O" + b"9" * 32


def call(server, data):
    # an `mn` inside data answers MN too: read up to the one after ours
    own_mn = sum(1 for line in data.split(b"\r\n") if line.split(b" ")[:1] == [b"mn"])
    with RawConn(server.addr) as c:
        c.send(data + MARKER)
        return c.read_until_marker(count=own_mn + 1)


def cas_of(reply, flag=b"c"):
    """The unique in the first meta reply line with a c flag."""
    m = re.search(rb"^(?:HD|VA \d+|EX|NS|NF)(?: [^\r\n]*)? " + flag + rb"(\d+)", reply, re.M)
    assert m, reply
    return int(m.group(1))


def gets_cas(server, key):
    reply = call(server, b"gets " + key + b"\r\n")
    m = re.match(rb"VALUE \S+ \d+ \d+ (\d+)\r\n", reply)
    assert m, reply
    return int(m.group(1))


# ---- replies memcached gives whatever the cas numbers ----

EXACT = [
    # mg: hits, misses, flags in request order
    (b"mg k\r\nmg k v\r\nmg k q\r\nmg k k O123 q\r\nmg k k O1\r\n", b"EN\r\nEN\r\nEN kk O1\r\n"),
    (b"set k 5 0 3\r\nabc\r\nmg k\r\nmg k v\r\nmg k s v f k O99 q\r\nmg k q\r\nmg k t\r\n",
     b"STORED\r\nHD\r\nVA 3\r\nabc\r\nVA 3 s3 f5 kk O99\r\nabc\r\nHD\r\nHD t-1\r\n"),
    (b"set k 0 0 1\r\nx\r\nmg k h\r\nmg k h\r\nmg k vfoo kbar\r\nmg k P L Pp\r\n",
     b"STORED\r\nHD h0\r\nHD h1\r\nVA 1 kk\r\nx\r\nCLIENT_ERROR duplicate flag\r\n"),
    (b"set k 0 0 1\r\nx\r\nmg k u h\r\nmg k u h\r\nmg k h\r\nmg k h\r\n",
     b"STORED\r\nHD h0\r\nHD h0\r\nHD h0\r\nHD h1\r\n"),
    # mg accepts the other commands' flags and ignores them
    (b"set k 0 0 1\r\nx\r\nmg k C12 F3 Mx I J5 D2 Pp Ll\r\n", b"STORED\r\nHD\r\n"),
    # ms: modes, flags, TTLs, data blocks
    (b"ms k 3\r\nabc\r\nms k 3 T0 F7 k O1 q\r\nabc\r\nmg k f v\r\nms k 0\r\n\r\nmg k v s\r\n",
     b"HD\r\nVA 3 f7\r\nabc\r\nHD\r\nVA 0 s0\r\n\r\n"),
    (b"ms k 3\r\nabc\r\nms k 3 MA\r\nxyz\r\nms k 3 MP F9 T100\r\n123\r\nmg k v f t\r\n",
     b"HD\r\nHD\r\nHD\r\nVA 9 f0 t-1\r\n123abcxyz\r\n"),
    (b"ms n 3 MA c\r\nxyz\r\nms n 3 MP\r\nxyz\r\nms n 3 MR\r\nxyz\r\nms n 3 ME\r\nxyz\r\n"
     b"ms n 3 ME\r\nxyz\r\nms n 3 MS k\r\nabc\r\nmg n v\r\n",
     b"NS c0\r\nNS\r\nNS\r\nHD\r\nNS\r\nHD kn\r\nVA 3\r\nabc\r\n"),
    (b"ms k 3 q\r\nabc\r\nms k 3 q ME\r\nabc\r\nms k 3 q C1\r\nabc\r\nms nope 3 q MR\r\nabc\r\n",
     b"NS\r\nEX\r\nNS\r\n"),
    (b"ms k 3 Mx\r\nabc\r\nms k 3 v t s h l u N1 R1 k\r\nabc\r\nms k 2 T-1\r\nab\r\nmg k\r\n",
     b"CLIENT_ERROR invalid mode for ms M token\r\nHD kk\r\nHD\r\nEN\r\n"),
    (b"ms k 2 F4294967296\r\nab\r\nmg k f\r\nms k 2 F4294967295\r\nab\r\nmg k f\r\n"
     b"ms k +2 T+5\r\nab\r\nms k 02\r\nab\r\n",
     b"HD\r\nHD f0\r\nHD\r\nHD f4294967295\r\nHD\r\nHD\r\n"),
    # md
    (b"md k\r\nmd k q\r\nmd k k O5 q\r\nset k 0 0 1\r\na\r\nmd k q\r\nmg k\r\n"
     b"set k 0 0 1\r\na\r\nmd k C1 k O9\r\nmd k C1 q\r\nmd k T30\r\nmg k\r\n",
     b"NF\r\nNF\r\nNF kk O5\r\nSTORED\r\nEN\r\nSTORED\r\nEX kk O9\r\nEX\r\nHD\r\nEN\r\n"),
    # ma
    (b"ma k\r\nma k q\r\nma k N0 v\r\nma k v\r\nma k v D5\r\nma k v MD D3\r\nma k v M- D100\r\n"
     b"ma k v M+\r\nma k v MI\r\nma k v Md\r\nma k v Mi\r\nma k v Mx\r\nma k v MII\r\n",
     b"NF\r\nNF\r\nVA 1\r\n0\r\nVA 1\r\n1\r\nVA 1\r\n6\r\nVA 1\r\n3\r\nVA 1\r\n0\r\nVA 1\r\n1\r\n"
     b"VA 1\r\n2\r\nCLIENT_ERROR invalid mode for ma M token\r\n"
     b"CLIENT_ERROR invalid mode for ma M token\r\nCLIENT_ERROR invalid mode for ma M token\r\n"
     b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"ma n N0 J10 v\r\nma n N0 J10 v\r\nma n q\r\nma n q v\r\nmg n v\r\nma n J5\r\n",
     b"VA 2\r\n10\r\nVA 2\r\n11\r\nVA 2\r\n13\r\nHD\r\n"),
    (b"set s 0 0 3\r\nabc\r\nma s\r\nma s q\r\nma s C1\r\nset e 0 0 0\r\n\r\nma e C1\r\n",
     b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
     b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\nEX\r\nSTORED\r\n"
     b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
    (b"set w 0 0 2\r\n10\r\nma w v MD\r\n"
     b"mg w v\r\nma w v MD D20\r\nset w 0 0 4\r\n5 ab\r\nma w v\r\nma w v t T100\r\nmg w t\r\n",
     b"STORED\r\nVA 1\r\n9\r\nVA 2\r\n9 \r\nVA 1\r\n0\r\nSTORED\r\n"
     b"VA 1\r\n6\r\nVA 1 t-1\r\n7\r\nHD t100\r\n"),
    (b"set q 0 0 1\r\n1\r\nma q q v\r\nma q q\r\nma nq q\r\nma nq q N0\r\nma nq q N0\r\n"
     b"ma nq q k O1 C99\r\nmg q v\r\n",
     b"STORED\r\nNF\r\nHD\r\nEX knq O1\r\nVA 1\r\n3\r\n"),
    # a result longer than the old value lives in a new item, and memcached's
    # ma goes on with the old one: its T shows in t but changes nothing stored
    (b"set n 0 0 1\r\n9\r\nma n T-1 v\r\nmg n v\r\nset n 0 0 2\r\n10\r\nma n T-1 v\r\nmg n v\r\n"
     b"set n 0 0 1\r\n9\r\nma n T100 t v\r\nmg n t v\r\n",
     b"STORED\r\nVA 2\r\n10\r\nVA 2\r\n10\r\nSTORED\r\nVA 2\r\n11\r\nEN\r\nSTORED\r\n"
     b"VA 2 t100\r\n10\r\nVA 2 t-1\r\n10\r\n"),
    # ma's TTL flags act where they stand among the others
    (b"ma t1 N100 t v\r\nma t2 t N100 v\r\nmg t2 t\r\nma t3 N100 T50 t v\r\nma t4 T50 N100 t v\r\n",
     b"VA 1 t100\r\n0\r\nVA 1 t-1\r\n0\r\nHD t100\r\nVA 1 t50\r\n0\r\nVA 1 t100\r\n0\r\n"),
    # base64 keys: decoded for the lookup, echoed canonically
    (b"ms a2V5 1 b k\r\nx\r\nmg key k v\r\nmg a2V5 b k v\r\nmd key k\r\nmg a2V5 b k\r\n",
     b"HD ka2V5 b\r\nVA 1 ka2V5 b\r\nx\r\nVA 1 ka2V5 b\r\nx\r\nHD kkey\r\nEN ka2V5 b\r\n"),
    (b"set key 0 0 1\r\nx\r\nmg a2V5 b k\r\nms a2V5 1 b MA\r\ny\r\nmg key k v\r\n",
     b"STORED\r\nHD kkey\r\nHD\r\nVA 2 kkey\r\nxy\r\n"),
    (b"mg YQ=a b k\r\nmg Y!Q== b k\r\nmg YQ==YQ== b k\r\nmg YQ b k\r\nmg a-_9 b k\r\n"
     b"ma dGVzdA== b N0 k v\r\nmg test k v\r\n",
     b"EN kYQA= b\r\nEN kYQ== b\r\nEN kYQ== b\r\nCLIENT_ERROR error decoding key\r\n"
     b"CLIENT_ERROR error decoding key\r\nVA 1 kdGVzdA== b\r\n0\r\nVA 1 ktest\r\n0\r\n"),
    # mn and unknown two-letter words
    (b"mn extra tokens\r\nmx\r\nmgg k\r\nMG k\r\n", b"MN\r\nERROR\r\nERROR\r\nERROR\r\n"),
    # me on a miss, and its argument errors
    (b"me\r\nme k\r\nme k b\r\nme !!! b\r\n",
     b"CLIENT_ERROR bad command line format\r\nEN\r\nCLIENT_ERROR bad command line format\r\n"
     b"CLIENT_ERROR bad command line format\r\n"),
]


@pytest.mark.parametrize("request_,reply", EXACT, ids=[str(i) for i in range(len(EXACT))])
def test_exact_replies(server, request_, reply):
    assert call(server, request_) == reply


# ---- every error string ----

def flags(n):
    return b" ".join([b"v", b"k", b"O1", b"P", b"L"][:n] + [b"xx"] * max(0, n - 5))


ERRORS = [
    # word counts: 20 words are refused before the flags are read
    (b"mg k " + flags(17) + b"\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    (b"mg k " + flags(18) + b"\r\n", b"CLIENT_ERROR options flags are too long\r\n"),
    (b"mg k " + flags(30) + b"\r\n", b"CLIENT_ERROR options flags are too long\r\n"),
    (b"md k " + flags(18) + b"\r\n", b"CLIENT_ERROR options flags too long\r\n"),
    (b"ma k " + flags(18) + b"\r\n", b"CLIENT_ERROR options flags too long\r\n"),
    (b"md k " + flags(17) + b"\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    # the key is checked first
    (b"mg " + LONG_KEY + b" " + flags(30) + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"md " + LONG_KEY + b" q\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ma " + LONG_KEY + b" q\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"me " + LONG_KEY + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"mg " + b"k" * 250 + b" v\r\n", b"EN\r\n"),
    # too few words
    (b"mg\r\nms\r\nmd\r\nma\r\n", b"ERROR\r\n" * 4),
    (b"ms k\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    # mg's flag errors, q never hiding them
    (b"mg k E\r\nmg k v v\r\nmg k vx vy\r\nmg k \x80\r\nmg k \x7f\r\nmg k ~\r\n",
     b"CLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\nCLIENT_ERROR duplicate flag\r\n"
     b"CLIENT_ERROR duplicate flag\r\nCLIENT_ERROR duplicate flag\r\nCLIENT_ERROR invalid flag\r\n"),
    (b"mg k Tx q\r\nmg k Nx\r\nmg k R\r\nmg k Cx\r\nmg k Fx q\r\nmg k b q\r\nmg k M\r\nmg k Jx\r\n"
     b"mg k D-1\r\nmg k Fabc zz\r\nmg k b Tx\r\n",
     b"CLIENT_ERROR bad token in command line format\r\n" * 4 +
     b"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR error decoding key\r\n"
     b"CLIENT_ERROR incorrect length for M token\r\nCLIENT_ERROR invalid numeric initial value\r\n"
     b"CLIENT_ERROR invalid numeric delta value\r\nCLIENT_ERROR invalid flag\r\n"
     b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg k " + OPAQUE_33 + b"\r\nmg k q " + OPAQUE_33 + b"\r\nmg k O" + b"9" * 31 + b"\r\n",
     b"CLIENT_ERROR opaque token too long\r\nCLIENT_ERROR opaque token too long\r\nEN O" +
     b"9" * 31 + b"\r\n"),
    # md and ma answer every flag error alike
    # a bad F keeps the error text an earlier flag set
    (b"mg k Tx Fx\r\nmg k b Fx\r\nmg k Jx Fx\r\nms k 1 Tx Fx\r\na\r\nms k 1 Fx\r\na\r\n",
     b"CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR error decoding key\r\n"
     b"CLIENT_ERROR invalid numeric initial value\r\n"
     b"CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad command line format\r\n"),
    (b"md k zz\r\nmd k v v\r\nmd k Tx\r\nmd k b\r\nma k zz\r\nma k Dx\r\nma k Jx\r\nma k MII\r\n",
     b"CLIENT_ERROR invalid or duplicate flag\r\n" * 8),
    (b"md k q " + OPAQUE_33 + b"\r\nma k q " + OPAQUE_33 + b"\r\n",
     b"CLIENT_ERROR opaque token too long\r\n" * 2),
    # ms: errors before the length leave the data block to be parsed as a
    # command; errors after it swallow the block
    (b"ms k abc\r\nxyz\r\nms k -1\r\nxyz\r\nms " + LONG_KEY + b" 3\r\nxyz\r\n",
     b"CLIENT_ERROR bad command line format\r\nERROR\r\n" * 3),
    (b"ms k 1 " + flags(17) + b"\r\nx\r\n", b"CLIENT_ERROR options flags too long\r\nERROR\r\n"),
    (b"ms k 1 " + flags(16) + b"\r\nx\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    (b"ms k 3 zz\r\nabc\r\nms k 3 v v\r\nabc\r\nms k 3 Mx\r\nabc\r\nms k 3 MEE\r\nabc\r\n"
     b"ms k 3 Me q\r\nabc\r\nms k 3 E\r\nabc\r\n",
     b"CLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\n"
     b"CLIENT_ERROR invalid mode for ms M token\r\nCLIENT_ERROR incorrect length for M token\r\n"
     b"CLIENT_ERROR invalid mode for ms M token\r\nCLIENT_ERROR invalid flag\r\n"),
    (b"ms k 3 " + OPAQUE_33 + b" Mx\r\nabc\r\nms k 3 " + OPAQUE_33 + b"\r\nabc\r\n"
     b"ms k 3 Tx\r\nabc\r\nms k 3 Fx\r\nabc\r\nms k 3 Cx\r\nabc\r\nms k 3 b\r\nabc\r\n",
     b"CLIENT_ERROR invalid mode for ms M token\r\nCLIENT_ERROR opaque token too long\r\n"
     b"CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad command line format\r\n"
     b"CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR error decoding key\r\n"),
    # the data block: exactly length + 2 bytes, ending in \r\n, even with q
    (b"ms k 3 q\r\nabcde\r\nms k 1 q\r\nxx\r\nms k 2\r\nabc\r\n",
     b"CLIENT_ERROR bad data chunk\r\nERROR\r\n" * 3),
]


@pytest.mark.parametrize("request_,reply", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_error_replies(server, request_, reply):
    assert call(server, request_) == reply


def test_ms_too_large_swallows_and_deletes_in_every_mode(server):
    big = b"x" * (1024 * 1024)
    for mode in (b"", b" MA", b" ME", b" MR"):
        assert call(server, b"set big 0 0 1\r\nv\r\n") == b"STORED\r\n"
        reply = call(server, b"ms big %d q%s\r\n%s\r\nmg big v\r\n" % (len(big), mode, big))
        assert reply == b"SERVER_ERROR object too large for cache\r\nEN\r\n", mode


# ---- cas: shared with the text commands ----

def test_cas_is_shared_with_gets(server):
    reply = call(server, b"ms k 3 c\r\nabc\r\n")
    cas = cas_of(reply)
    assert reply == b"HD c%d\r\n" % cas
    assert gets_cas(server, b"k") == cas
    assert call(server, b"mg k c\r\n") == b"HD c%d\r\n" % cas
    # a text set gives a new one, mg sees it
    call(server, b"set k 0 0 1\r\nx\r\n")
    cas2 = gets_cas(server, b"k")
    assert cas2 != cas
    assert call(server, b"mg k c v\r\n") == b"VA 1 c%d\r\nx\r\n" % cas2


def test_ms_compare_and_swap(server):
    cas = cas_of(call(server, b"ms k 1 c\r\na\r\n"))
    assert call(server, b"ms k 1 C%d c\r\nb\r\n" % (cas + 1000)) == b"EX c0\r\n"
    reply = call(server, b"ms k 1 C%d c\r\nb\r\n" % cas)
    cas2 = cas_of(reply)
    assert reply == b"HD c%d\r\n" % cas2 and cas2 != cas
    assert call(server, b"ms nope 1 C5 c\r\nb\r\n") == b"NF c0\r\n"
    # add ignores a compare; append and prepend honour it
    reply = call(server, b"ms nope 1 C5 ME c\r\nb\r\n")
    assert reply.startswith(b"HD c")
    assert call(server, b"ms nope 1 C0\r\nb\r\n") == b"EX\r\n"
    assert call(server, b"ms k 1 MA C%d\r\nz\r\n" % cas) == b"EX\r\n"
    assert call(server, b"ms k 1 MA C%d\r\nz\r\nmg k v\r\n" % cas2) == b"HD\r\nVA 2\r\nbz\r\n"
    # cas with text commands: the unique from ms works for "cas"
    cas3 = cas_of(call(server, b"mg k c\r\n"))
    assert call(server, b"cas k 0 0 1 %d\r\nq\r\n" % cas3) == b"STORED\r\n"


def test_ma_wraps_around_on_a_fresh_server(server_factory):
    # memcached checks a number of 2**63 or more for a minus sign with
    # strchr, reading past the value into whatever its memory holds: on a
    # server that has served other tests it may call the number non-numeric
    srv = server_factory()
    assert call(srv, b"set w 0 0 20\r\n18446744073709551615\r\nma w v\r\n"
                     b"ma w v MD D18446744073709551615\r\nma w v D18446744073709551615\r\n") == \
        b"STORED\r\nVA 1\r\n0\r\nVA 1\r\n0\r\nVA 20\r\n18446744073709551615\r\n"


def test_ma_compare_and_new_cas(server):
    cas = cas_of(call(server, b"set c 0 0 1\r\n5\r\nmg c c\r\n"))
    assert call(server, b"ma c C%d v\r\n" % (cas + 1)) == b"EX\r\n"
    reply = call(server, b"ma c C%d v c\r\n" % cas)
    cas2 = cas_of(reply)
    assert reply == b"VA 1 c%d\r\n6\r\n" % cas2 and cas2 != cas
    assert gets_cas(server, b"c") == cas2
    assert call(server, b"ma c C0 v\r\n") == b"VA 1\r\n7\r\n"
    assert call(server, b"ma nx C5 v\r\nma nx C5 N0 v\r\n") == b"NF\r\nVA 1\r\n0\r\n"


# ---- TTLs ----

def ttl_ok(reply, pattern, ttl):
    """reply matches pattern with a t<n> where n is ttl or one less."""
    for n in (ttl, ttl - 1):
        if reply == pattern.replace(b"<t>", b"%d" % n):
            return True
    return False


def test_mg_touch_and_ttl(server):
    assert call(server, b"set k 0 0 1\r\nx\r\nmg k t T100\r\n") == b"STORED\r\nHD t-1\r\n"
    assert ttl_ok(call(server, b"mg k t\r\n"), b"HD t<t>\r\n", 100)
    assert ttl_ok(call(server, b"mg k T200 t v\r\n"), b"VA 1 t<t>\r\nx\r\n", 200)
    assert call(server, b"mg k T0 t\r\nmg k t\r\n") == b"HD t-1\r\nHD t-1\r\n"
    # a negative TTL returns the item now; it is gone after
    assert call(server, b"mg k T-1 v\r\nmg k v\r\n") == b"VA 1\r\nx\r\nEN\r\n"
    # touch and gat see mg's TTL and the other way round
    call(server, b"set k 0 0 1\r\nx\r\n")
    assert call(server, b"touch k 300\r\n") == b"TOUCHED\r\n"
    assert ttl_ok(call(server, b"mg k t\r\n"), b"HD t<t>\r\n", 300)


def test_ms_and_md_ttl(server):
    assert ttl_ok(call(server, b"ms k 1 T100\r\nx\r\nmg k t\r\n"), b"HD\r\nHD t<t>\r\n", 100)
    # md T only with I
    assert call(server, b"md k T30 q\r\nmg k\r\n") == b"EN\r\n"
    assert ttl_ok(call(server, b"set k 0 0 1\r\nx\r\nmd k I T30\r\nmg k t\r\n"),
                  b"STORED\r\nHD\r\nHD t<t> X W\r\n", 30)


# ---- stale-while-revalidate on one connection ----

def test_vivify_on_miss(server):
    reply = call(server, b"mg new N30 c v k\r\n")
    cas = cas_of(reply)
    assert reply == b"VA 0 c%d knew W\r\n\r\n" % cas
    assert call(server, b"mg new v\r\nmg new N30 q\r\nmg new\r\n") == \
        b"VA 0 Z\r\n\r\nHD Z\r\nHD Z\r\n"
    # the winner recaches with the cas it was given; the stub was a normal item
    assert call(server, b"ms new 3 C%d\r\nnew\r\nmg new v\r\n" % cas) == b"HD\r\nVA 3\r\nnew\r\n"
    # N's TTL and T's, in the order given
    assert call(server, b"mg v1 N30 T60 t\r\nmg v2 T60 N30 t\r\nmg v3 t N30 T60\r\n") == \
        b"HD t60 W\r\nHD t30 W\r\nHD t-1 W\r\n"


def test_invalidate_then_recache(server):
    cas = cas_of(call(server, b"set k 0 0 1\r\na\r\nmg k c\r\n"))
    assert call(server, b"md k I\r\n") == b"HD\r\n"
    reply = call(server, b"mg k c v\r\n")
    cas2 = cas_of(reply)
    assert cas2 != cas                                   # md I bumps the cas
    assert reply == b"VA 1 c%d X W\r\na\r\n" % cas2
    assert call(server, b"mg k c v\r\nmg k\r\n") == b"VA 1 c%d Z X\r\na\r\nHD Z X\r\n" % cas2
    # invalidated again: the next reader wins again
    assert call(server, b"md k I q\r\nmg k\r\nmg k\r\n") == b"HD X W\r\nHD Z X\r\n"
    cas3 = cas_of(call(server, b"mg k c\r\n"))
    assert call(server, b"ms k 1 C%d\r\nb\r\nmg k v\r\n" % cas3) == b"HD\r\nVA 1\r\nb\r\n"
    # a text set clears the stale state too
    assert call(server, b"md k I\r\nset k 0 0 1\r\nc\r\nmg k\r\n") == b"HD\r\nSTORED\r\nHD\r\n"


def test_ms_invalidate_keeps_an_older_writers_value_stale(server):
    call(server, b"ms s 1 T100\r\nx\r\n")
    reply = call(server, b"ms s 1 C1 I c T0\r\ny\r\n")
    cas = cas_of(reply)
    assert reply == b"HD c%d\r\n" % cas
    # the old TTL is kept, the value is stale and the next reader wins
    assert ttl_ok(call(server, b"mg s t v c\r\n"), b"VA 1 t<t> c%d X W\r\ny\r\n" % cas, 100)
    assert call(server, b"ms s 1 C1 I\r\nz\r\nmg s v\r\n") == b"HD\r\nVA 1 Z X\r\nz\r\n"
    # I only lowers the bar for set/replace compares; a newer cas is refused
    assert call(server, b"ms s 1 C%d I\r\nw\r\n" % (cas + 10 ** 9)) == b"EX\r\n"
    assert call(server, b"ms s 1 MA C1 I\r\nw\r\n") == b"EX\r\n"


def test_recache_flag(server):
    call(server, b"ms r 1 T100\r\nx\r\nms r2 1\r\nx\r\n")
    assert call(server, b"mg r R30\r\nmg r R200\r\nmg r R200\r\n") == b"HD\r\nHD W\r\nHD Z\r\n"
    # an item without TTL never wins by R
    assert call(server, b"mg r2 R200\r\nmg r2 N30 R200\r\n") == b"HD\r\nHD\r\n"


def test_md_invalidate_compare(server):
    cas = cas_of(call(server, b"set e 0 0 0\r\n\r\nmg e c\r\n"))
    assert call(server, b"md e C%d I\r\nmd e I q\r\nmg e\r\nmd nothere I\r\n" % (cas + 5)) == \
        b"EX\r\nHD X W\r\nNF\r\n"
    cas2 = cas_of(call(server, b"mg e c\r\n"))
    assert call(server, b"md e C%d q\r\nmg e\r\n" % cas2) == b"EN\r\n"


# ---- me ----

def test_me(server):
    call(server, b"set k 0 0 1\r\na\r\n")
    cas = gets_cas(server, b"k")     # a fetch: fetch=yes
    reply = call(server, b"me k\r\nme k x y\r\n")
    # la counts whole seconds of the server's clock: a tick may fall between
    # the set and the me, under load
    line = b"ME k exp=-1 la=[01] cas=%d fetch=yes cls=(\\d+) size=61\r\n" % cas
    assert re.fullmatch(line + line, reply), reply
    call(server, b"ms a2V5 1 b T100\r\nx\r\n")
    reply = call(server, b"me a2V5 b\r\nme key\r\nme a2V5\r\n")
    m = re.fullmatch(rb"ME a2V5 exp=-(\d+) la=[01] cas=\d+ fetch=no cls=\d+ size=63\r\n"
                     rb"ME a2V5 exp=-(\d+) la=[01] cas=\d+ fetch=no cls=\d+ size=63\r\nEN\r\n", reply)
    assert m and 99 <= int(m.group(1)) <= 100, reply


# ---- access time and hit flags ----

def test_last_access_is_the_store_time_until_fetched(server):
    call(server, b"set la 0 0 1\r\nx\r\n")
    time.sleep(2.2)
    reply = call(server, b"mg la l h\r\nmg la l h\r\n")
    m = re.fullmatch(rb"HD l(\d) h0\r\nHD l(\d) h1\r\n", reply)
    assert m and int(m.group(1)) in (2, 3) and m.group(2) == m.group(1), reply


# ---- quiet mode, pipelined ----

def test_pipelined_quiet_gets_return_exactly_the_hits(server):
    keys = [b"q%04d" % i for i in range(1000)]
    stored = {k for i, k in enumerate(keys) if i % 3 == 0}
    with RawConn(server.addr) as c:
        setup = b"".join(b"ms %s %d q\r\n%s\r\n" % (k, len(k), k) for k in sorted(stored))
        assert c.call(setup) == b""
        req = b"".join(b"mg %s v k q O%d\r\n" % (k, i) for i, k in enumerate(keys)) + b"mn\r\n"
        c.send(req)
        # everything up to the one MN: the hits, in order, and nothing else
        reply = c.read_until_marker(timeout=10)
        # and nothing after it
        c.send(b"version\r\n")
        c.sock.settimeout(5)
        tail = c.sock.recv(4096)
    want = b"".join(b"VA 5 k%s O%d\r\n%s\r\n" % (k, i, k)
                    for i, k in enumerate(keys) if k in stored)
    assert reply == want
    assert tail == b"VERSION 1.6.18\r\n"


def test_quiet_mode_hides_only_what_memcached_hides(server):
    req = (b"ms a 1 q\r\n1\r\nms a 1 q ME\r\n1\r\nmg a q\r\nmg b q\r\nmg a q v\r\n"
           b"ma a q\r\nma b q\r\nma b q N0\r\nmd a q\r\nmd a q\r\nmd b q I\r\nmn\r\n")
    # hidden: ms's HD, mg b's EN, ma a's change, the first md a and md b I
    assert call(server, req) == b"NS\r\nHD\r\nVA 1\r\n1\r\nNF\r\nHD\r\nNF\r\nMN\r\n"


def test_meta_and_text_pipelined_on_one_connection(server):
    req = (b"set t 1 0 2\r\nab\r\nmg t f v\r\nappend t 0 0 1\r\nc\r\nms t 1 MA\r\nd\r\n"
           b"get t\r\nma t\r\nincr n 1\r\nma n N0 J41 v\r\nincr n 1\r\ndelete t\r\nmg t v\r\n"
           b"touch n 100\r\nmg n v s\r\ndecr n 50\r\nmn\r\nversion\r\n")
    assert call(server, req) == (
        b"STORED\r\nVA 2 f1\r\nab\r\nSTORED\r\nHD\r\nVALUE t 1 4\r\nabcd\r\nEND\r\n"
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\nNOT_FOUND\r\n"
        b"VA 2\r\n41\r\n42\r\nDELETED\r\nEN\r\nTOUCHED\r\nVA 2 s2\r\n42\r\n0\r\nMN\r\n"
        b"VERSION 1.6.18\r\n")


def test_flush_all_reaches_meta(server):
    assert call(server, b"ms f 1\r\nx\r\nflush_all\r\nmg f v\r\nma f\r\nmd f\r\nme f\r\n") == \
        b"HD\r\nOK\r\nEN\r\nNF\r\nNF\r\nEN\r\n"


# ---- stale-while-revalidate across connections and channels ----

def channel_requests(srv):
    """mpcache: requests served per channel, or None for memcached."""
    with RawConn(srv.addr) as c:
        reply = c.call(b"stats channels\r\n")
    if not reply.startswith(b"STAT"):
        return None
    return {int(m.group(1)): int(m.group(2))
            for m in re.finditer(rb"STAT (\d+):requests (\d+)", reply)}


def connections_on_channels(srv, want=4, probes=200):
    """Opens connections until at least one sits on each channel (mpcache)
    and `want` are open; returns them with their channel (None: memcached)."""
    conns = []
    seen = set()
    for _ in range(64):
        c = RawConn(srv.addr)
        before = channel_requests(srv)
        if before is None:
            conns.append((c, None))
            if len(conns) >= want:
                return conns
            continue
        c.send(b"mn\r\n" * probes + MARKER)
        assert c.read_until_marker(count=probes + 1) == b"MN\r\n" * probes
        after = channel_requests(srv)
        ch = max(after, key=lambda k: after[k] - before.get(k, 0))
        assert after[ch] - before.get(ch, 0) >= probes
        conns.append((c, ch))
        seen.add(ch)
        if len(conns) >= want and len(seen) == len(after):
            return conns
    pytest.fail(f"connections never spread over the channels: {[ch for _, ch in conns]}")


def test_stale_while_revalidate_across_channels(server_factory):
    srv = server_factory(threads=2)
    conns = connections_on_channels(srv, want=4)
    try:
        # a writer and three readers, on both channels
        channels = {ch for _, ch in conns}
        assert channels == {None} or channels == {0, 1}
        by_channel = sorted(conns, key=lambda x: (x[1] is None, x[1]))
        writer = by_channel[0][0]
        readers = [c for c, _ in by_channel[1:]] + [by_channel[0][0]]
        assert writer.call(b"set hot 0 0 2\r\nv1\r\n") == b"STORED\r\n"
        assert writer.call(b"md hot I\r\n") == b"HD\r\n"
        first = readers[0].call(b"mg hot c v\r\n")
        cas = cas_of(first)
        assert first == b"VA 2 c%d X W\r\nv1\r\n" % cas
        for r in readers[1:]:
            assert r.call(b"mg hot c v\r\n") == b"VA 2 c%d Z X\r\nv1\r\n" % cas
        # the winner recaches; everybody sees the fresh value
        assert readers[0].call(b"ms hot 2 C%d\r\nv2\r\n" % cas) == b"HD\r\n"
        for r in readers:
            assert r.call(b"mg hot v\r\n") == b"VA 2\r\nv2\r\n"
        # a losing reader's late write with the stale cas is refused
        assert readers[1].call(b"ms hot 2 C%d\r\nv3\r\n" % cas) == b"EX\r\n"
        # vivify: one miss wins, the others see Z until the value arrives
        assert readers[1].call(b"mg cold N30 v\r\n") == b"VA 0 W\r\n\r\n"
        for r in (readers[0], readers[2], writer):
            assert r.call(b"mg cold N30 v\r\n") == b"VA 0 Z\r\n\r\n"
        assert readers[1].call(b"ms cold 1\r\nc\r\n") == b"HD\r\n"
        assert readers[2].call(b"mg cold N30 v\r\n") == b"VA 1\r\nc\r\n"
    finally:
        for c, _ in conns:
            c.close()


def test_exactly_one_winner_under_concurrency(server_factory):
    """Clients on both channels miss the same keys at the same moment: for
    each key exactly one is told W."""
    srv = server_factory(threads=2)
    conns = connections_on_channels(srv, want=6)
    nkeys = 200
    replies = [None] * len(conns)
    start = threading.Barrier(len(conns))

    def worker(i, c):
        start.wait()
        req = b"".join(b"mg race%d N30 k\r\n" % k for k in range(nkeys))
        replies[i] = c.call(req, timeout=20)

    try:
        threads = [threading.Thread(target=worker, args=(i, c)) for i, (c, _) in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wins = {}
        for reply in replies:
            lines = reply.split(b"\r\n")[:-1]
            assert len(lines) == nkeys, reply[:200]
            for k, line in enumerate(lines):
                assert line in (b"HD krace%d W" % k, b"HD krace%d Z" % k), line
                wins[k] = wins.get(k, 0) + line.endswith(b" W")
        assert all(wins[k] == 1 for k in range(nkeys)), wins
    finally:
        for c, _ in conns:
            c.close()


def test_invalidation_race_hands_out_one_win(server_factory):
    """md I from one channel while readers on both channels fetch: after
    each invalidation exactly one reader is told W."""
    srv = server_factory(threads=2)
    conns = connections_on_channels(srv, want=5)
    writer, readers = conns[0][0], [c for c, _ in conns[1:]]
    try:
        assert writer.call(b"set sw 0 0 1\r\nx\r\n") == b"STORED\r\n"
        for _ in range(30):
            assert writer.call(b"md sw I\r\n") == b"HD\r\n"
            got = []
            lock = threading.Lock()

            def read(c):
                r = c.call(b"mg sw v\r\n")
                with lock:
                    got.append(r)

            ts = [threading.Thread(target=read, args=(c,)) for c in readers]
            for t in ts:
                t.start()
            for t in ts:
                t.join(10)
            assert sorted(got) == sorted([b"VA 1 X W\r\nx\r\n"] +
                                         [b"VA 1 Z X\r\nx\r\n"] * (len(readers) - 1)), got
    finally:
        for c, _ in conns:
            c.close()
