"""The text-protocol parser (ext/proto/parser.c) through mpcache._parser.

Every line is checked three ways (h11's idea): the whole buffer, fed byte by
byte (no prefix may parse as a line), and with trailing data (the next
request must not leak into this one).  The tokenizer and the number rules are
then fuzzed against reference models: Python for memcached's tokenizer, the C
library's own strtoul/strtol/strtoull for memcached's safe_strto* helpers.
"""

import ctypes
import ctypes.util

import pytest
from hypothesis import given, settings, strategies as st

_parser = pytest.importorskip("mpcache._parser")
parse = _parser.parse
parse_full = _parser.parse_full
OK, NEED_MORE, TOO_LONG = _parser.OK, _parser.NEED_MORE, _parser.TOO_LONG
LINE_MAX = _parser.LINE_MAX
LINE_TOKENS = _parser.LINE_TOKENS

TRAILERS = [b"get x\r\n", b"set k 0 0 1\r\n", b"\r\n", b"garbage without newline", b"\n"]


def tr(buf, cmd, words):
    """Asserts buf (one complete line) parses to (cmd, words) three ways."""
    # whole
    status, consumed, name, toks = parse(buf)
    assert (status, consumed, name, toks) == (OK, len(buf), cmd, words)
    # byte by byte: no prefix is a line yet
    for i in range(len(buf)):
        status, consumed, name, toks = parse(buf[:i])
        expect = TOO_LONG if i > LINE_MAX and not _multiget_prefix(buf[:i]) else NEED_MORE
        assert (status, consumed) == (expect, 0), (i, buf[:i])
    # with trailing data
    for extra in TRAILERS:
        assert parse(buf + extra) == (OK, len(buf), cmd, words)


def _multiget_prefix(b):
    s = b.lstrip(b" ")
    return len(b) - len(s) <= 100 and (s.startswith(b"get ") or s.startswith(b"gets "))


# ---- lines and tokens ----

def test_simple_get():
    tr(b"get foo\r\n", "get", [b"get", b"foo"])


def test_bare_newline_ends_a_line():
    tr(b"get foo\n", "get", [b"get", b"foo"])


def test_multi_get():
    tr(b"get a b c\r\n", "get", [b"get", b"a", b"b", b"c"])


def test_storage_line():
    tr(b"set k 0 0 5 noreply\r\n", "set", [b"set", b"k", b"0", b"0", b"5", b"noreply"])


def test_every_command_word_is_recognised():
    for word in _parser.COMMANDS:
        line = word.encode() + b" x\r\n"
        tr(line, word, [word.encode(), b"x"])


def test_runs_of_spaces_collapse():
    tr(b"  get   a  b  \r\n", "get", [b"get", b"a", b"b"])


def test_only_space_separates():
    tr(b"get a\tb\x01c\xffd\r\n", "get", [b"get", b"a\tb\x01c\xffd"])


def test_cr_cr_lf_keeps_one_cr_in_the_key():
    tr(b"get ab\r\r\n", "get", [b"get", b"ab\r"])


def test_cr_lf_alone_is_the_command_cr():
    tr(b"\r\n", None, [b"\r"])


def test_two_bytes_then_lf_drops_the_cr():
    tr(b"x\r\n", None, [b"x"])


def test_empty_line_has_no_words():
    tr(b"\n", None, [])


def test_spaces_only_line_has_no_words():
    tr(b"    \r\n", None, [])


def test_nul_ends_the_line_but_not_the_consumption():
    tr(b"get a\x00b c\r\n", "get", [b"get", b"a"])


def test_commands_are_case_sensitive():
    tr(b"SET k 0 0 1\r\n", None, [b"SET", b"k", b"0", b"0", b"1"])
    tr(b"Get k\r\n", None, [b"Get", b"k"])


def test_prefix_of_a_command_is_not_the_command():
    tr(b"ge k\r\n", None, [b"ge", b"k"])
    tr(b"gett k\r\n", None, [b"gett", b"k"])


def test_need_more_without_newline():
    assert parse(b"get foo") == (NEED_MORE, 0, None, [])
    assert parse(b"") == (NEED_MORE, 0, None, [])


def test_long_line_without_newline_is_fatal():
    assert parse(b"set " + b"k" * LINE_MAX)[0] == TOO_LONG
    assert parse(b"x" * (LINE_MAX + 1))[0] == TOO_LONG


def test_long_line_at_the_limit_still_waits():
    assert parse(b"x" * LINE_MAX)[0] == NEED_MORE


def test_long_multiget_waits_for_its_newline():
    assert parse(b"get " + b"k " * 2000)[0] == NEED_MORE
    assert parse(b"gets " + b"k " * 2000)[0] == NEED_MORE
    assert parse(b" " * 100 + b"get " + b"k " * 2000)[0] == NEED_MORE


def test_long_multiget_after_too_many_spaces_is_fatal():
    assert parse(b" " * 101 + b"get " + b"k " * 2000)[0] == TOO_LONG


def test_only_get_and_gets_may_be_long():
    # memcached checks for "get " / "gets " only: a long gat or bget closes
    for word in (b"gat 0 ", b"bget ", b"gats 0 ", b"get\t", b"GET "):
        assert parse(word + b"k " * 2000)[0] == TOO_LONG, word


def test_long_line_with_newline_is_parsed():
    # the limit applies only while no newline has been buffered
    line = b"set " + b"k" * 3000 + b" 0 0 1\r\n"
    status, consumed, cmd, words = parse(line)
    assert (status, consumed, cmd) == (OK, len(line), "set")
    assert words[1] == b"k" * 3000


def test_twenty_three_words_are_kept():
    words = [b"get"] + [b"k%d" % i for i in range(22)]
    status, consumed, cmd, toks, rest, line = parse_full(b" ".join(words) + b"\r\n")
    assert toks == words and rest is None


def test_words_beyond_twenty_three_are_the_rest():
    words = [b"get"] + [b"k%d" % i for i in range(40)]
    status, consumed, cmd, toks, rest, line = parse_full(b" ".join(words) + b"\r\n")
    assert toks == words[:LINE_TOKENS]
    assert _parser.split(rest) == words[LINE_TOKENS:]


def test_trailing_spaces_after_the_last_kept_word_leave_an_empty_rest():
    words = [b"get"] + [b"k%d" % i for i in range(22)]
    status, consumed, cmd, toks, rest, line = parse_full(b" ".join(words) + b"   \r\n")
    assert toks == words and rest == b"  " and _parser.split(rest) == []


def test_one_trailing_space_after_the_last_kept_word_is_no_rest():
    words = [b"get"] + [b"k%d" % i for i in range(22)]
    status, consumed, cmd, toks, rest, line = parse_full(b" ".join(words) + b" \r\n")
    assert toks == words and rest is None


def test_split_walks_every_word():
    assert _parser.split(b"  a b\tc  d ") == [b"a", b"b\tc", b"d"]
    assert _parser.split(b"") == []


# ---- numbers: memcached's safe_strtoul / safe_strtol / safe_strtoull ----

@pytest.mark.parametrize("tok,val", [
    (b"0", 0), (b"7", 7), (b"+7", 7), (b"007", 7), (b"-0", 0),
    (b"4294967295", 4294967295), (b"4294967296", 0), (b"4294967297", 1),
    (b"\t5", 5), (b"5\t", 5), (b"5\txyz", 5), (b"5\r", 5),
    (b"18446744073709551615", 4294967295),
    (b"-18446744073709551615", 1),
    (b"-1", None), (b"1_0", None), (b"0x10", None), (b"1.5", None),
    (b"", None), (b"+", None), (b"-", None), (b"abc", None), (b"12abc", None),
    (b"18446744073709551616", None),
])
def test_parse_u32(tok, val):
    assert _parser.parse_u32(tok) == val


@pytest.mark.parametrize("tok,val", [
    (b"0", 0), (b"-1", -1), (b"+1", 1), (b"2147483647", 2147483647),
    (b"2147483648", -2147483648), (b"4294967297", 1), (b"-2147483649", 2147483647),
    (b"9223372036854775807", -1), (b"9223372036854775808", None),
    (b"-9223372036854775808", 0), (b"-9223372036854775809", None),
    (b"1.5", None), (b"", None), (b"x1", None), (b"\x0b-3", -3),
])
def test_parse_i32(tok, val):
    assert _parser.parse_i32(tok) == val


@pytest.mark.parametrize("tok,val", [
    (b"0", 0), (b"18446744073709551615", 18446744073709551615),
    (b"18446744073709551616", None), (b"-1", None), (b"-0", 0),
    (b"9223372036854775808", 9223372036854775808),
    (b"-9223372036854775807", None),
    (b"-9223372036854775809", 9223372036854775807),
    (b"5 ", 5), (b"12ABC", None), (b" 5", 5),
])
def test_parse_u64(tok, val):
    assert _parser.parse_u64(tok) == val


# ---- fuzzing against reference models ----

def model_parse(buf):
    """memcached's try_read_command_ascii + tokenize_command, in Python."""
    nl = buf.find(b"\n")
    if nl < 0:
        if len(buf) > LINE_MAX and not _multiget_prefix(buf):
            return (TOO_LONG, 0, None, [])
        return (NEED_MORE, 0, None, [])
    line = buf[:nl]
    if nl > 1 and line.endswith(b"\r"):
        line = line[:-1]
    line = line.split(b"\x00", 1)[0]
    words = [w for w in line.split(b" ") if w]
    kept = words[:LINE_TOKENS]
    cmd = None
    if kept and kept[0].decode("latin-1") in _parser.COMMANDS:
        cmd = kept[0].decode()
    return (OK, nl + 1, cmd, kept)


COMMAND_WORDS = [w.encode() for w in _parser.COMMANDS] + [
    b"noreply", b"HTTP/1.1", b"GET", b"mg", b"ms", b"md", b"ma", b"me", b"lru_crawler",
    b"0", b"1", b"-1", b"+7", b"4294967296", b"18446744073709551616", b"k", b"key",
    b"k" * 251, b"detail", b"settings", b"items", b"slabs", b"conns", b"reset"]
PIECES = st.one_of(
    st.sampled_from(COMMAND_WORDS),
    st.sampled_from([b" ", b"  ", b"\r", b"\n", b"\r\n", b"\t", b"\x00", b"\xff"]),
    st.binary(max_size=8),
)
FUZZ_INPUT = st.lists(PIECES, max_size=40).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(FUZZ_INPUT)
def test_fuzz_parser_matches_the_model(buf):
    assert parse(buf) == model_parse(buf)


@settings(max_examples=200, deadline=None)
@given(FUZZ_INPUT, st.data())
def test_fuzz_no_prefix_parses_before_its_newline(buf, data):
    status, consumed, cmd, words = parse(buf)
    if status != OK:
        return
    cut = data.draw(st.integers(min_value=0, max_value=consumed - 1))
    assert parse(buf[:cut])[0] != OK
    assert parse(buf[:consumed]) == (status, consumed, cmd, words)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=6).filter(lambda w: b" " not in w
                                                         and b"\n" not in w
                                                         and b"\x00" not in w
                                                         and b"\r" not in w),
                min_size=1, max_size=80))
def test_fuzz_long_lines_keep_every_word(words):
    line = b"get " + b" ".join(words) + b"\r\n"
    status, consumed, cmd, toks, rest, _ = parse_full(line)
    every = toks + (_parser.split(rest) if rest is not None else [])
    assert every == [b"get"] + words


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.strtoul.restype = ctypes.c_ulong
_libc.strtoul.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
_libc.strtol.restype = ctypes.c_long
_libc.strtol.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
_libc.strtoull.restype = ctypes.c_ulonglong
_libc.strtoull.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
ERANGE = 34


def _c_strto(fn, tok):
    buf = ctypes.create_string_buffer(tok)
    end = ctypes.c_char_p()
    ctypes.set_errno(0)
    v = fn(buf, ctypes.byref(end), 10)
    err = ctypes.get_errno()
    endpos = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(buf)
    return v, err, endpos


def _tail_ok(tok, endpos):
    return endpos > 0 and (endpos == len(tok) or chr(tok[endpos]) in " \t\n\v\f\r")


def ref_u32(tok):
    v, err, endpos = _c_strto(_libc.strtoul, tok)
    if err == ERANGE or endpos == 0 or not _tail_ok(tok, endpos):
        return None
    if v >= 1 << 63 and b"-" in tok[:endpos]:
        return None
    return v & 0xFFFFFFFF


def ref_i32(tok):
    v, err, endpos = _c_strto(_libc.strtol, tok)
    if err == ERANGE or endpos == 0 or not _tail_ok(tok, endpos):
        return None
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def ref_u64(tok):
    v, err, endpos = _c_strto(_libc.strtoull, tok)
    if err == ERANGE or endpos == 0 or not _tail_ok(tok, endpos):
        return None
    if v >= 1 << 63 and b"-" in tok[:endpos]:
        return None
    return v


NUMBERISH = st.lists(st.sampled_from(
    [b"0", b"1", b"9", b"5", b"-", b"+", b"\t", b"\r", b"\x0b", b"x", b".",
     b"18446744073709551615", b"4294967296", b"9223372036854775808"]),
    min_size=0, max_size=8).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(NUMBERISH)
def test_fuzz_numbers_match_the_c_library(tok):
    assert _parser.parse_u32(tok) == ref_u32(tok)
    assert _parser.parse_i32(tok) == ref_i32(tok)
    assert _parser.parse_u64(tok) == ref_u64(tok)


# ---- regressions, each named after what it pins ----

def test_regression_python_split_is_not_memcached_split():
    # bytes.split() without an argument also splits on tabs and \r
    assert parse(b"get a\tb\r\n")[3] == [b"get", b"a\tb"]


def test_regression_lone_cr_before_lf_is_a_word():
    assert parse(b"\r\n")[3] == [b"\r"]


def test_regression_data_block_is_not_part_of_the_line():
    buf = b"set k 0 0 5\r\nhello\r\n"
    assert parse(buf) == (OK, 13, "set", [b"set", b"k", b"0", b"0", b"5"])
