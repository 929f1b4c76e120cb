"""Writes a seed corpus for fuzz/fuzz_request.c into a directory.

    python3 fuzz/seeds.py DIR              the full set: the differential
                                           generator's batches of every profile,
                                           the request bytes the tests send,
                                           and the hand-written shapes below
    python3 fuzz/seeds.py --curated DIR    the small set kept in fuzz/seeds/

Every seed starts with the harness's three control bytes (fuzz_request.c);
they cycle through every combination of reading, feeding and -R, so each
shape is also tried through the channel, byte by byte, with a client that
does not read.  The output is the same on every run for the same sources.
"""

import argparse
import ast
import hashlib
import itertools
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "differential"))

import gen  # noqa: E402  (tests/differential/gen.py)

# libFuzzer's default -max_len is 4096; fuzz runs raise it, but a seed much
# longer than that mostly costs time per run.
MAX_SEED = 16384
PROFILES = ("mixed", "malformed", "noreply", "split", "meta")

# Shapes the generator leaves out or rarely makes: values held by reference
# and the output mark ("big" and "huge" exist in the harness's store), a
# reply streamed over several turns, data blocks cut anywhere, closes.
HANDWRITTEN = {
    "multiget_past_mark": b"get huge huge huge big big big big big big big big big big big big big big\r\n"
                          b"get a\r\nmn\r\n",
    "gat_past_mark": b"gat 100 huge huge huge big big big\r\ngats 0 big huge huge\r\n",
    "gets_bad_key_after_mark": b"gets huge huge huge " + b"k" * 251 + b"\r\nmn\r\n",
    "mg_big_values": b"mg big v k s f t c\r\nmg huge v q\r\nmg big v O123 b\r\nmn\r\n",
    "ref_then_overwrite": b"get big big\r\nset big 0 0 3\r\nabc\r\nget big\r\ndelete big\r\nappend huge 0 0 1\r\nx\r\n",
    "ref_then_incr": b"set n 0 0 2\r\n10\r\nget n big n\r\nincr n 5\r\nma n D3 v\r\ndecr n 100\r\n",
    "stats_conns": b"stats conns\r\nget huge huge huge\r\nstats conns\r\nstats\r\nstats settings\r\n"
                   b"stats items\r\nstats slabs\r\nstats channels\r\nstats sizes\r\n",
    "set_split_block": b"set k 0 0 10\r\n0123456789\r\nset k 0 0 10 noreply\r\n01234\r\n"
                       b"56789\r\nget k\r\n",
    "ms_block": b"ms k 5 T0 F3 c\r\nhello\r\nms k 2 MA q\r\n!!\r\nmg k v f c\r\nmn\r\n",
    "bad_chunk": b"set k 0 0 3\r\nabcde\r\nget k\r\ncas k 0 0 1 1\r\nx\r\n",
    "too_large": b"set k 0 0 2000000\r\n" + b"x" * 64 + b"\r\nget k\r\n",
    "quit_after_get": b"get big\r\nquit\r\nget big\r\n",
    "flush_and_expiry": b"set t 0 1 1\r\na\r\nflush_all 2\r\nget t\r\nflush_all\r\nget t\r\ntouch t 5\r\n",
    "memlimit": b"cache_memlimit 8\r\nset k 0 0 1\r\na\r\ncache_memlimit 100\r\nverbosity 1\r\n",
    "pipeline": b"".join(b"set k%d 0 0 1\r\n%d\r\nget k%d\r\n" % (i, i % 10, i) for i in range(40)),
    "long_line": b"get " + b"key " * 700 + b"\r\n",
    "too_long_line": b"x" * 3000,
    "http": b"GET / HTTP/1.1\r\n",
    "shutdown": b"shutdown foo\r\nshutdown graceful\r\n",
    "meta_quiet": b"mg miss v q\r\nmd miss q\r\nma miss q N0 J5\r\nmg miss s v\r\nmn\r\n",
    "meta_stale": b"ms s 1 T100\r\na\r\nmd s I T30\r\nmg s v c\r\nmg s v c\r\nms s 1 I C1\r\nb\r\nmn\r\n",
    "meta_base64": b"ms Zm9v 3 b\r\nbar\r\nmg Zm9v b v k\r\nme foo\r\nmd Zm9v b q\r\n",
    "meta_errors": b"mg k v v\r\nmg k E\r\nms k x\r\nma k Dx\r\n" + b"mg k " + b"v " * 20 + b"\r\n",
}


def _bin(op, key=b"", ext=b"", val=b"", opaque=0, cas=0, magic=0x80):
    """A binary protocol request (binary.c)."""
    body = len(ext) + len(key) + len(val)
    return (struct.pack(">BBHBBHIIQ", magic, op, len(key), len(ext), 0, 0, body, opaque, cas)
            + ext + key + val)


_SET_EXT = struct.pack(">II", 5, 0)
_ARITH_EXT = struct.pack(">QQI", 3, 10, 0)
# The binary protocol's shapes, after the others (so that adding them
# changed no earlier seed's control bytes): a pipeline of every family with
# quiet forms, values held by reference, malformed lengths and swallowed
# bodies, a value cut across reads.
BINARY = {
    "bin_pipeline": b"".join([
        _bin(0x01, b"a", _SET_EXT, b"abc", 1), _bin(0x0c, b"a", opaque=2),
        _bin(0x09, b"zz", opaque=3), _bin(0x11, b"n", _SET_EXT, b"7", 4),
        _bin(0x05, b"n", _ARITH_EXT, opaque=5), _bin(0x16, b"m", _ARITH_EXT, opaque=6),
        _bin(0x0e, b"a", val=b"de", opaque=7), _bin(0x14, b"a", cas=1, opaque=8),
        _bin(0x1d, b"n", struct.pack(">I", 100), opaque=9), _bin(0x10, b"items"),
        _bin(0x0a, opaque=10), _bin(0x0b), _bin(0x18, ext=struct.pack(">I", 0)),
        _bin(0x0a, opaque=11)]),
    "bin_big_values": b"".join([
        _bin(0x00, b"huge"), _bin(0x0d, b"big"), _bin(0x23, b"big", struct.pack(">I", 0)),
        _bin(0x1c, b"huge", struct.pack(">I", 5)), _bin(0x0a)]),
    "bin_malformed": b"".join([
        _bin(0x1b, ext=struct.pack(">I", 1)), b"XXXX", _bin(0x7f, val=b"body"),
        _bin(0x21, b"PLAIN", val=b"\0u\0p"), _bin(0x01, b"k", b"\0" * 4, b"v"),
        _bin(0x00, b"abcd")[:24] + b"abc"]),
    "bin_too_large": _bin(0x01, b"k", _SET_EXT, b"x" * 64)[:8] + struct.pack(">I", 2000000 + 9)
                     + _bin(0x01, b"k", _SET_EXT, b"x" * 64)[12:] + _bin(0x00, b"k"),
    "bin_bad_magic": _bin(0x01, b"a", _SET_EXT, b"v") + _bin(0x00, b"a") + bytes(24),
}

# The control bytes: every reading mode with every feeding mode, -R values,
# the clock tick and the channel path (byte 0), piece sizes (byte 1), and
# now and then repeats, disabled commands, failing allocations and the -C -M
# engine (byte 2), in a fixed order.
OPTS = [v << 7 | t << 6 | f << 4 | o << 2 | r
        for v, t, f, o, r in itertools.product((0, 1), (0, 1), range(4), range(4), range(4))
        if (r + o + f + t + v) % 3 == 0]
PARAMS = (0, 7, 31, 128, 200, 255, 3)
MORE = (0, 0, 0, 1, 2, 3, 0x04, 0x08, 0x10, 0x32, 0x0c, 0x40, 0xa0, 0x41, 0x54, 0)
CONTROLS = list(zip(OPTS, itertools.cycle(PARAMS), itertools.cycle(MORE)))


def control(i):
    return bytes(CONTROLS[i % len(CONTROLS)])


def from_generator(per_profile, units=(1, 12), max_len=MAX_SEED):
    """Batches of the differential generator's units, at most max_len bytes
    (longer ones are drawn again); an unknown cas is the generator's own
    placeholder."""
    out = []
    for profile in PROFILES:
        g = gen.Gen(1000 + PROFILES.index(profile), profile)
        rng = g.rng
        kept = 0
        while kept < per_profile:
            n = rng.randrange(*units)
            data = b"".join(g.unit(first=i == 0).render({}) for i in range(n))
            if len(data) <= max_len:
                out.append(data)
                kept += 1
    return out


def from_tests():
    """The bytes constants of the tests that look like requests: they end a
    line and start with a word (the tests' corner cases)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "tests")):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                try:
                    tree = ast.parse(f.read())
                except SyntaxError:
                    continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
                    b = node.value
                    if 4 <= len(b) <= MAX_SEED and b"\n" in b and b[:1].isalpha():
                        found.add(b)
    return sorted(found)


def write(directory, seeds):
    os.makedirs(directory, exist_ok=True)
    for i, (name, data) in enumerate(seeds):
        body = control(i) + data
        fname = name or hashlib.sha1(body).hexdigest()[:16]
        with open(os.path.join(directory, fname), "wb") as f:
            f.write(body)
    return len(seeds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curated", action="store_true", help="the small committed set")
    ap.add_argument("directory")
    args = ap.parse_args()
    seeds = [(name, data) for name, data in sorted(HANDWRITTEN.items())]
    if args.curated:
        seeds += [("gen_%s_%d" % (PROFILES[i // 3], i % 3), d)
                  for i, d in enumerate(from_generator(3, units=(4, 10), max_len=4096))]
    else:
        seeds += [(None, d) for d in from_generator(120)]
        seeds += [(None, d) for d in from_tests()]
    seeds += sorted(BINARY.items())
    n = write(args.directory, seeds)
    print(f"{n} seeds in {args.directory}")


if __name__ == "__main__":
    main()
