"""Exact replies for the corners of memcached 1.6.18's text protocol that the
executor (ext/proto/executor.c) reproduces on purpose.  Every test runs against the
real memcached too, so an expectation here is what memcached itself answers.

Several pin *which* replies survive an error or a close: memcached queues
replies and transmits them only at certain points (end of input, after a get,
at mn, when its -R budget of 20 + 1 requests is spent); a get with a key over
250 bytes culls everything queued since, and a silent close drops it.
"""

import pytest

from tests.support.raw import MARKER, RawConn, EOF_TAG, wait_for_stat

LONG_KEY = b"k" * 251


def call(server, data):
    # an `mn` inside data answers MN too: read up to the one after ours
    own_mn = data.split(b"\r\n").count(b"mn")
    with RawConn(server.addr) as c:
        c.send(data + MARKER)
        return c.read_until_marker(count=own_mn + 1)


def until_eof(server, data):
    with RawConn(server.addr) as c:
        c.send(data)
        return c.read_until_eof()


def sets(n, prefix=b"s"):
    return b"".join(b"set %s%d 0 0 1\r\nx\r\n" % (prefix, i) for i in range(n))


# ---- culling of queued replies by a bad multi-get ----

def test_bad_key_in_get_culls_the_queued_stored(server):
    assert call(server, b"set a 0 0 1\r\nx\r\nget a " + LONG_KEY + b"\r\n") == \
        b"CLIENT_ERROR bad command line format\r\n"


def test_bad_key_in_get_keeps_what_an_earlier_get_transmitted(server):
    data = b"set a 0 0 1\r\nx\r\nget a\r\nset b 0 0 1\r\ny\r\nget b " + LONG_KEY + b"\r\n"
    assert call(server, data) == \
        b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nCLIENT_ERROR bad command line format\r\n"


def test_bad_key_in_get_keeps_what_mn_transmitted(server):
    data = b"set a 0 0 1\r\nx\r\nmn\r\nget " + LONG_KEY + b"\r\n"
    assert call(server, data) == b"STORED\r\nMN\r\nCLIENT_ERROR bad command line format\r\n"


@pytest.mark.parametrize("n,survivors", [(20, 0), (21, 21), (40, 21), (41, 41), (61, 61)])
def test_regression_request_budget_counts_like_nreqs(server, n, survivors):
    # 21 requests run before the first transmit, 20 in each later turn
    reply = call(server, sets(n) + b"get " + LONG_KEY + b"\r\n")
    assert reply == b"STORED\r\n" * survivors + b"CLIENT_ERROR bad command line format\r\n"


# ---- silent closes ----

def test_http_probe_closes_and_drops_queued_replies(server):
    data = b"get a\r\nset a 0 0 1\r\nx\r\nzz HTTP/1.1\r\nversion\r\n"
    assert until_eof(server, data) == b"END\r\n" + EOF_TAG


def test_http_check_only_for_words_outside_the_dispatch_branches(server):
    # memcached dispatches on the first byte: "sxx" is in the 's' branch
    assert call(server, b"sxx HTTP/1.1\r\nmx a HTTP/1.1\r\n") == b"ERROR\r\nERROR\r\n"
    assert until_eof(server, b"mxyz a HTTP/1.1\r\n") == EOF_TAG


def test_over_long_line_closes_and_drops_queued_replies(server):
    assert until_eof(server, b"set a 0 0 1\r\nx\r\n" + b"x" * 3000) == EOF_TAG


def test_over_long_line_keeps_a_transmitted_get(server):
    assert until_eof(server, b"get a\r\n" + b"x" * 3000) == b"END\r\n" + EOF_TAG


def test_quit_sends_everything_queued(server):
    assert until_eof(server, b"set a 0 0 1\r\nx\r\nquit\r\nversion\r\n") == b"STORED\r\n" + EOF_TAG


# ---- data blocks ----

def test_bad_data_chunk_then_the_rest_is_a_command(server):
    assert call(server, b"set k 0 0 3\r\nabcde\r\n") == b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"


def test_noreply_hides_a_bad_data_chunk(server):
    assert call(server, b"set k 0 0 3 noreply\r\nabcde\r\n") == b"ERROR\r\n"


def test_rejected_storage_line_does_not_swallow_its_block(server):
    assert call(server, b"set k 0 0 -1\r\nget k\r\n") == \
        b"CLIENT_ERROR bad command line format\r\nEND\r\n"


def test_too_large_swallows_and_answers_after_the_block(server):
    big = b"z" * 2000000
    data = b"set a 0 0 1\r\nx\r\nset a 0 0 %d\r\n%s\r\nget a\r\n" % (len(big), big)
    assert call(server, data) == b"STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n"


def test_too_large_add_keeps_the_old_item(server):
    big = b"z" * 2000000
    data = b"set a 0 0 1\r\nx\r\nadd a 0 0 %d\r\n%s\r\nget a\r\n" % (len(big), big)
    assert call(server, data) == \
        b"STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE a 0 1\r\nx\r\nEND\r\n"


def test_too_large_append_result_is_not_stored(server):
    half = b"h" * 600000
    data = b"set a 0 0 %d\r\n%s\r\nappend a 0 0 %d\r\n%s\r\n" % (len(half), half, len(half), half)
    assert call(server, data) == b"STORED\r\nNOT_STORED\r\n"


def test_data_block_split_at_every_byte(server):
    data = b"set k 5 0 10\r\n0123456789\r\nget k\r\n"
    with RawConn(server.addr) as c:
        reply = c.call(data, pieces=range(1, len(data)))
    assert reply == b"STORED\r\nVALUE k 5 10\r\n0123456789\r\nEND\r\n"


# ---- lines, tokens, numbers ----

@pytest.mark.parametrize("req,reply", [
    (b"\r\n", b"ERROR\r\n"),
    (b"SET a 0 0 1\r\n", b"ERROR\r\n"),
    (b"get\r\n", b"ERROR\r\n"),
    (b"gat 100\r\n", b"END\r\n"),
    (b"set k 0 0\r\n", b"ERROR\r\n"),
    (b"set k 0 0 1 x noreply\r\n", b"ERROR\r\n"),
    (b"delete a 1\r\n", b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"),
    (b"delete a 0\r\n", b"NOT_FOUND\r\n"),
    (b"delete a 1 noreply\r\n", b""),
    (b"touch a x\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"gat x a\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"incr a -1\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n"),
    (b"flush_all x\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"flush_all noreply 5\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"verbosity\r\n", b"ERROR\r\n"),
    (b"verbosity x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"cache_memlimit 7\r\n", b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"),
    (b"cache_memlimit 1000000001\r\n", b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"),
    (b"cache_memlimit x\r\n", b"ERROR\r\n"),
    (b"shutdown\r\n", b"ERROR: shutdown not enabled\r\n"),
    (b"version x y\r\n", b"VERSION 1.6.18\r\n"),
    (b"stats nonsense\r\n", b"ERROR\r\n"),
    (b"stats detail\r\n", b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"),
    (b"stats sizes\r\n", b"STAT sizes_status disabled\r\nEND\r\n"),
    # memcached's tuning commands
    (b"slabs\r\n", b"ERROR\r\n"),
    (b"slabs reassign 1 1\r\n", b"SAME src and dst class are identical\r\n"),
    (b"slabs reassign 1 200\r\n", b"BADCLASS invalid src or dst class id\r\n"),
    (b"slabs reassign x 2\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"slabs reassign 1 2 noreply\r\n", b"ERROR\r\n"),
    (b"slabs automove 1 noreply\r\n", b""),
    (b"slabs automove 3\r\n", b"ERROR\r\n"),
    (b"slabs automove ratio x\r\n", b"ERROR\r\n"),
    (b"lru_crawler crawl all\r\n", b"OK\r\n"),
    (b"lru_crawler crawl 128\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler crawl 1,x\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler sleep 1000001\r\n", b"CLIENT_ERROR sleep must be one second or less\r\n"),
    (b"lru_crawler tocrawl x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"lru_crawler enable\r\n", b"ERROR failed to start lru crawler thread\r\n"),
    (b"lru_crawler\r\n", b"ERROR\r\n"),
    (b"lru_crawler HTTP/1.1\r\n", b"ERROR\r\n"),
    (b"lru tune 50 40 0.1 2\r\n", b"ERROR hot and warm pcts must not exceed 80\r\n"),
    (b"lru tune 10 20 0 2\r\n", b"ERROR hot/warm age factors must be greater than 0\r\n"),
    (b"lru mode x\r\n", b"ERROR\r\n"),
    (b"lru\r\n", b"ERROR\r\n"),
    (b"refresh_certs\r\n", b"Error TLS not enabled\r\n"),
])
def test_exact_reply(server, req, reply):
    assert call(server, req) == reply


def test_flags_truncate_to_32_bits_and_plus_is_accepted(server):
    assert call(server, b"set k +4294967297 0 1\r\nx\r\nget k\r\n") == \
        b"STORED\r\nVALUE k 1 1\r\nx\r\nEND\r\n"


def test_tab_and_cr_are_key_bytes(server):
    assert call(server, b"set a\tb\r 0 0 1\r\nx\r\nget a\tb\r\r\n") == \
        b"STORED\r\nVALUE a\tb\r 0 1\r\nx\r\nEND\r\n"


def test_more_than_twenty_three_words_keep_noreply_out_of_reach(server):
    # only the first 23 words are tokenized: the last of them decides noreply
    words = b" ".join(b"w%d" % i for i in range(30))
    assert call(server, b"get " + words + b"\r\n") == b"END\r\n"
    assert call(server, b"version " + words + b" HTTP/1.1\r\n") == b"VERSION 1.6.18\r\n"


def test_multiget_of_hundreds_of_keys(server):
    keys = [b"key%d" % i for i in range(400)]
    data = b"set key7 0 0 1\r\n7\r\nset key399 0 0 1\r\n9\r\nget " + b" ".join(keys) + b"\r\n"
    assert call(server, data) == \
        b"STORED\r\nSTORED\r\nVALUE key7 0 1\r\n7\r\nVALUE key399 0 1\r\n9\r\nEND\r\n"


def test_lru_crawler_disable_then_crawl(server):
    try:
        assert call(server, b"lru_crawler disable\r\nlru_crawler disable\r\n") == b"OK\r\nOK\r\n"
        wait_for_stat(server.addr, b"settings", "lru_crawler", "no")
        assert call(server, b"lru_crawler crawl all\r\nlru_crawler metadump all\r\n") == \
            b"CLIENT_ERROR lru crawler disabled\r\n" * 2
        assert b"STAT lru_crawler no\r\n" in call(server, b"stats settings\r\n")
    finally:
        assert call(server, b"lru_crawler enable\r\n") == b"OK\r\n"
