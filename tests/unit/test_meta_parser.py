"""The meta commands' flag parser (mp_meta_parse in ext/proto/parser.c) and
memcached's base64, through mpcache._parser.

The expectations are memcached 1.6.18's _meta_flag_preparse as observed on
the wire (tests/integration/test_meta.py checks the same texts against the
real server): one table of flags for every meta command, only the first byte
of a word names the flag, an unknown byte or a repeated one stops parsing at
once, a number or key that does not parse is remembered (the last one wins)
and parsing goes on.
"""

import base64
import random

import pytest
from hypothesis import given, settings, strategies as st

_parser = pytest.importorskip("mpcache._parser")
meta_parse = _parser.meta_parse

DUPLICATE = "CLIENT_ERROR duplicate flag"
INVALID = "CLIENT_ERROR invalid flag"
BAD_TOKEN = "CLIENT_ERROR bad token in command line format"
BAD_FORMAT = "CLIENT_ERROR bad command line format"
DECODE = "CLIENT_ERROR error decoding key"
M_LENGTH = "CLIENT_ERROR incorrect length for M token"
BAD_INITIAL = "CLIENT_ERROR invalid numeric initial value"
BAD_DELTA = "CLIENT_ERROR invalid numeric delta value"

# Every flag memcached 1.6.18 accepts, with a token that parses.
ACCEPTED = {
    "b": b"b", "c": b"c", "f": b"f", "h": b"h", "k": b"k", "l": b"l", "O": b"Oopaque",
    "P": b"Ppath", "L": b"Lroute", "q": b"q", "s": b"s", "t": b"t", "u": b"u", "v": b"v",
    "N": b"N30", "R": b"R10", "T": b"T60", "F": b"F7", "C": b"C99", "I": b"I", "M": b"ME",
    "J": b"J5", "D": b"D3",
}


def parse(line, first=2):
    """Parses `line` whole and with trailing data (the next request must not
    leak into this one); both must agree."""
    whole = meta_parse(line, first)
    for extra in (b"mg other v\r\n", b"\r\n", b"garbage"):
        assert meta_parse(line + extra, first) == whole
    return whole


# ---- the error texts, in one table ----

def test_error_texts_are_memcacheds():
    assert _parser.META_ERRORS == (
        "",
        DUPLICATE, INVALID, BAD_TOKEN, BAD_FORMAT, DECODE, M_LENGTH, BAD_INITIAL, BAD_DELTA,
        "CLIENT_ERROR invalid or duplicate flag",
        "CLIENT_ERROR options flags are too long",
        "CLIENT_ERROR options flags too long",
        "CLIENT_ERROR opaque token too long",
        "CLIENT_ERROR invalid mode for ms M token",
        "CLIENT_ERROR invalid mode for ma M token",
        "SERVER_ERROR Out of memory allocating new item",
    )


def test_limits():
    # memcached: ntokens > 20 with its terminal token, i.e. 20 words
    assert _parser.META_MAX_WORDS == 19
    assert _parser.META_OPAQUE_MAX == 32


# ---- every flag ----

@pytest.mark.parametrize("flag", sorted(ACCEPTED))
def test_every_flag_is_accepted(flag):
    key = b"a2V5" if flag == "b" else b"key"
    err, f = parse(b"mg " + key + b" " + ACCEPTED[flag] + b"\r\n")
    assert err is None
    assert f["flags"] == flag
    assert f["key"] == b"key"


def test_flags_together_and_their_values():
    # a line keeps at most 23 words (memcached's tokenizer): two halves
    names = sorted(ACCEPTED)
    for half in (names[:12], names[12:]):
        line = b"mg a2V5 b " + b" ".join(ACCEPTED[f] for f in half if f != "b") + b"\r\n"
        err, f = parse(line)
        assert err is None
        assert f["flags"] == "".join(sorted(set(half) | {"b"}))
    err, f = parse(b"mg a2V5 b N30 R10 T60 F7 C99 ME J5 D3\r\n")
    assert f == dict(flags="CDFJMNRTb", key=b"key", key_binary=True, mode="E",
                     ttl=60, vivify_ttl=30, recache_ttl=10, client_flags=7, cas=99, delta=3,
                     initial=5)


def test_defaults():
    err, f = parse(b"ma k\r\n")
    assert err is None
    assert f == dict(flags="", key=b"k", key_binary=False, mode=None, ttl=0, vivify_ttl=0,
                     recache_ttl=0, client_flags=0, cas=0, delta=1, initial=0)


@pytest.mark.parametrize("flag", [b"E", b"e", b"x", b"A", b"S", b"Z", b"W", b"X", b"n",
                                  b"0", b"-", b"+", b"\t", b"\r", b"noreply", b"$"])
def test_unknown_flags_are_invalid(flag):
    # E (a later memcached's flag) is not one in 1.6.18
    assert parse(b"mg k " + flag + b"\r\n")[0] == INVALID


@pytest.mark.parametrize("flag", [b"\x7f", b"\x80", b"\xff", b"\xc3\xa9"])
def test_bytes_from_127_up_count_as_duplicates(flag):
    # memcached's seen[] has 127 entries and refuses anything past them
    assert parse(b"mg k " + flag + b"\r\n")[0] == DUPLICATE


def test_only_the_first_byte_names_a_flag():
    err, f = parse(b"mg k vfoo kbar qq\r\n")
    assert err is None and f["flags"] == "kqv"
    assert parse(b"mg k vx vy\r\n")[0] == DUPLICATE
    assert parse(b"mg k v v\r\n")[0] == DUPLICATE


def test_ms_flags_start_after_the_length():
    err, f = parse(b"ms k 5 T10 F3\r\n", first=3)
    assert err is None and (f["ttl"], f["client_flags"]) == (10, 3)
    # from word 2 on, the length itself would be a flag
    assert parse(b"ms k 5 T10\r\n", first=2)[0] == INVALID


# ---- numbers ----

@pytest.mark.parametrize("flag,field", [(b"N", "vivify_ttl"), (b"T", "ttl"), (b"R", "recache_ttl")])
def test_ttl_tokens_are_strtol(flag, field):
    for tok, want in [(b"0", 0), (b"-1", -1), (b"+5", 5), (b"2592001", 2592001),
                      (b"2147483647", 2147483647), (b"4294967296", 0), (b"-2147483649", 2147483647)]:
        err, f = parse(b"mg k " + flag + tok + b"\r\n")
        assert err is None and f[field] == want, tok
    for tok in [b"", b"x", b"1x", b"1.5", b"0x10", b"9223372036854775808"]:
        assert parse(b"mg k " + flag + tok + b"\r\n")[0] == BAD_TOKEN, tok


def test_client_flags_are_strtoul_and_keep_the_commands_error():
    for tok, want in [(b"0", 0), (b"4294967295", 4294967295), (b"4294967296", 0), (b"+1", 1)]:
        err, f = parse(b"ms k 1 F" + tok + b"\r\n", first=3)
        assert err is None and f["client_flags"] == want
    for tok in [b"", b"-1", b"abc", b"1_0"]:
        assert parse(b"ms k 1 F" + tok + b"\r\n", first=3)[0] == BAD_FORMAT


@pytest.mark.parametrize("flag,field,error", [(b"C", "cas", BAD_TOKEN),
                                              (b"J", "initial", BAD_INITIAL),
                                              (b"D", "delta", BAD_DELTA)])
def test_64_bit_tokens(flag, field, error):
    err, f = parse(b"ma k " + flag + b"18446744073709551615\r\n")
    assert err is None and f[field] == 2 ** 64 - 1
    err, f = parse(b"ma k " + flag + b"0\r\n")
    assert err is None and f[field] == 0
    for tok in [b"", b"-1", b"18446744073709551616", b"1.0", b"5abc"]:
        assert parse(b"ma k " + flag + tok + b"\r\n")[0] == error, tok


def test_mode_is_one_byte():
    for tok in [b"E", b"A", b"P", b"R", b"S", b"I", b"D", b"+", b"-", b"x", b"e"]:
        err, f = parse(b"ms k 1 M" + tok + b"\r\n", first=3)
        assert err is None and f["mode"] == tok.decode()   # validated per command
    assert parse(b"ms k 1 M\r\n", first=3)[0] == M_LENGTH
    assert parse(b"ms k 1 MSS\r\n", first=3)[0] == M_LENGTH


# ---- which error wins ----

def test_the_last_soft_error_wins():
    # a bad F sets no text of its own: the one before it stays, or the
    # command's default
    assert parse(b"mg k Fx\r\n")[0] == BAD_FORMAT
    assert parse(b"mg k Tx Fx\r\n")[0] == BAD_TOKEN
    assert parse(b"mg k Fx Tx\r\n")[0] == BAD_TOKEN
    assert parse(b"mg k Jx Fx\r\n")[0] == BAD_INITIAL
    assert parse(b"mg k b Fx\r\n")[0] == DECODE
    assert parse(b"mg k Fx b\r\n")[0] == DECODE
    assert parse(b"mg k C12 F3 M J D I\r\n")[0] == BAD_DELTA
    assert parse(b"mg k M J\r\n")[0] == BAD_INITIAL
    assert parse(b"mg k b Tx\r\n")[0] == BAD_TOKEN
    assert parse(b"mg k Tx b\r\n")[0] == DECODE


def test_an_unknown_or_repeated_flag_stops_at_once():
    assert parse(b"mg k Fabc zz\r\n")[0] == INVALID
    assert parse(b"mg k zz Fabc\r\n")[0] == INVALID
    assert parse(b"mg k Tx v v Nx\r\n")[0] == DUPLICATE
    assert parse(b"mg k b v E\r\n")[0] == INVALID


# ---- base64 keys ----

def test_b_decodes_the_key():
    err, f = parse(b"mg a2V5 b\r\n")
    assert err is None and f["key"] == b"key" and f["key_binary"]
    err, f = parse(b"mg AAEC/w== b\r\n")
    assert err is None and f["key"] == b"\x00\x01\x02\xff"


@pytest.mark.parametrize("key", [b"k", b"YQ", b"a2V", b"====", b"Y===", b"a-_9", b"AAAA===="])
def test_b_refuses_what_memcached_refuses(key):
    assert parse(b"mg " + key + b" b\r\n")[0] == DECODE


# memcached's decoder (from hostap): bytes outside the alphabet are skipped,
# the rest must be a non-zero multiple of four, the first padded quantum ends
# the input, more than two pads is an error.  Checked against memcached 1.6.18
# with "mg <key> b k" (its miss echoes the re-encoded key).
DECODE_VECTORS = [
    (b"YQ==", b"a"), (b"YWI=", b"ab"), (b"YWJj", b"abc"), (b"YQ=a", b"a\x00"),
    (b"Y!Q==", b"a"), (b"YQ=!=", b"a"), (b"Y=Q=", b"`"), (b"=YQ=", b"\x01"),
    (b"YQ==\x80", b"a"), (b"YQ==YQ==", b"a"), (b"YWI=YWI=", b"ab"), (b"QUJDRA==", b"ABCD"),
    (b"////", b"\xff\xff\xff"), (b"a+/9", b"k\xef\xfd"),
    (b"YQ", None), (b"QUJDRA=", None), (b"====", None), (b"Y===", None), (b"AAAA====", None),
    (b"a-_9", None), (b"", None), (b"!!!!", None),
]


@pytest.mark.parametrize("src,want", DECODE_VECTORS)
def test_base64_decode_vectors(src, want):
    assert _parser.b64decode(src) == want


@given(st.binary(min_size=1, max_size=187))
@settings(max_examples=300, deadline=None)
def test_base64_round_trip_matches_the_standard(data):
    enc = _parser.b64encode(data)
    assert enc == base64.b64encode(data)
    assert _parser.b64decode(enc) == data


def test_base64_canonical_padded_input_decodes_like_the_standard():
    rng = random.Random(5)
    for _ in range(500):
        data = rng.randbytes(rng.randrange(1, 60))
        assert _parser.b64decode(base64.b64encode(data)) == data
