"""A seeded generator of raw memcached requests: the text protocol, and in
the "meta" profile the meta commands (mg ms md ma mn) mixed with it.

Each `Unit` is one request as the wire sees it (command line plus data block,
or a deliberately broken variant), built from parts whose meaning under
memcached 1.6.18 is known, so the generator knows how the server will frame
the bytes: whether a data block follows a storage line (only when the line is
accepted, or rejected as too large), and that no request leaves the server in
the middle of a data block or a line.  That is what lets the harness end every
batch with `mn` and read exactly to its reply.  A wrong guess shows up as the
*reference* timing out or closing, which the harness reports as a generator
bug, not as an mpcache difference.

Everything that could make two correct servers answer differently is left
out: TTLs that expire during the run (only 0, negative, past or far-future
ones), eviction (modest sizes, -m 1024), delayed flush_all, stats numbers, and
connection-closing requests anywhere but at the end of a session.

cas uniques differ between servers, so a unit's `cas` token may be a `CasRef`:
the unique the server last returned for a key, substituted per server.  For
the meta commands the same goes further: mg's `l` (seconds since the last
access) is never asked, `R` tokens never equal an item's TTL, and literal
compare tokens are only 0 and 2**64-1, so no reply depends on which second
each server is in or on the numeric value of a unique.  `me` is left out
(its debug line carries server-specific numbers).
"""

import base64
import random
from dataclasses import dataclass, field

# Words a payload line must not start with: a payload that the server parses
# as commands (after a rejected storage line) must not start another storage
# command, flush, close the connection or answer like the `mn` marker.
COMMAND_WORDS = {
    b"get", b"bget", b"gets", b"gat", b"gats", b"set", b"add", b"replace", b"append",
    b"prepend", b"cas", b"incr", b"decr", b"delete", b"touch", b"stats", b"flush_all",
    b"version", b"quit", b"shutdown", b"verbosity", b"mn", b"mg", b"ms", b"md", b"ma",
    b"me", b"watch", b"lru_crawler", b"lru", b"slabs", b"cache_memlimit", b"misbehave",
    b"debugtime", b"extstore", b"verbose", b"config",
}

# A line longer than this without a newline closes the connection unless it
# is a get/gets: non-get lines stay below it whatever the write boundaries.
SAFE_LINE = 1800
MAX_ITEM_10B_KEY = 1048507     # -I 1m, 10-byte key, flags 0: the largest value stored


@dataclass(frozen=True)
class CasRef:
    """The cas unique a server last returned for `key` (gets/gats)."""
    key: bytes


UNKNOWN_CAS = b"987654321987654"   # used when a server never showed a unique for the key


@dataclass
class Unit:
    parts: list                    # bytes and CasRef
    kind: str                      # the command word or a category, for reports
    closes: bool = False           # the server closes the connection after it

    def render(self, last_cas):
        out = []
        for p in self.parts:
            if isinstance(p, CasRef):
                out.append(last_cas.get(p.key, UNKNOWN_CAS))
            else:
                out.append(p)
        return b"".join(out)

    def ops(self):
        return 1


@dataclass(frozen=True)
class Tok:
    text: bytes
    ok: bool


def toks(ok, bad):
    return [Tok(t, True) for t in ok] + [Tok(t, False) for t in bad]


# Number tokens with memcached's verdict (C strtol/strtoul; 32-bit truncation).
FLAGS = toks(ok=[b"0", b"0", b"0", b"1", b"7", b"65535", b"4294967295", b"4294967296", b"+7", b"007",
                 b"-0", b"2147483648"],
             bad=[b"-1", b"1_0", b"0x10", b"1.5", b"abc", b"18446744073709551616", b"1e3"])
# No TTL that can expire while the test runs: 0, negative, past absolute,
# relative of a day or more, absolute far future.
EXPTIMES = toks(ok=[b"0", b"0", b"0", b"0", b"-1", b"-100000", b"100000", b"2592000", b"2592001",
                    b"2000000000", b"1000000000", b"+5000", b"4294967296", b"-2147483649", b"00"],
                bad=[b"abc", b"1_0", b"0x10", b"1.5", b"18446744073709551616", b"+-1", b"9a"])
DELTAS = toks(ok=[b"1", b"1", b"1", b"2", b"0", b"10", b"100", b"18446744073709551615", b"+5",
                  b"9999999999", b"007"],
              bad=[b"-1", b"abc", b"18446744073709551616", b"1_0", b"0x10", b"5abc", b"1.0"])
# Values incr/decr meet: memcached's strtoull rules and its padding.
NUMERIC_VALUES = [b"0", b"1", b"9", b"10", b"99", b"100", b"18446744073709551615",
                  b"18446744073709551614", b"4294967295", b" 5", b"5 AB", b"12ABC", b"-1",
                  b"-0", b"+3", b"007", b"", b"abc", b"1.5", b"  12  ", b"00000000000000000001"]

CAS_BAD = [b"abc", b"-1", b"18446744073709551616", b"1_0", b"0x1"]

# ---- meta commands ----

# Bytes that are not flags in 1.6.18 (E is a later memcached's add mode
# flag; W X Z only appear in replies).
META_UNKNOWN = [b"E", b"x", b"noreply", b"Z", b"W", b"X", b"n", b"0", b"$", b"\t", b"e"]
META_BAD_NUMBERS = [b"T", b"Tx", b"T1.5", b"N", b"Nabc", b"R", b"R-", b"C-1", b"Cx", b"Fx", b"F-1",
                    b"J-1", b"Jx", b"D-1", b"D", b"D1_0", b"T0x10"]
MS_MODES = toks(ok=[b"S", b"E", b"A", b"P", b"R"], bad=[b"x", b"s", b"e", b"I", b"D", b"+"])
MA_MODES = toks(ok=[b"I", b"+", b"D", b"-"], bad=[b"i", b"d", b"x", b"E", b"S", b"A"])
# R (recache) tokens: never one of the TTLs items get (EXPTIMES), so whether
# "remaining TTL < R" holds does not depend on the second it is asked in.
RECACHE = [b"30", b"60000", b"200000", b"0", b"-1", b"3000000", b"+60000"]
# Literal compare tokens whose outcome does not depend on unique numbering.
CAS_LITERAL = [b"0", b"18446744073709551615"]
META_MAX_WORDS = 19
OPAQUE_MAX = 32


class Gen:
    """Draws units.  All randomness comes from one random.Random(seed)."""

    def __init__(self, seed, profile="mixed"):
        self.rng = random.Random(seed)
        self.profile = profile
        r = self.rng
        self.keys = [b"k%d" % i for i in range(12)]
        self.num_keys = [b"n%d" % i for i in range(4)]
        # Valid keys that naive parsers get wrong: tab, high and control
        # bytes, an inner \r, exactly 250 bytes, the word noreply.
        self.odd_keys = [b"\tkey", b"k\x80\xff", b"k\x01\x7f", b"a\rb", b"K" * 250,
                         b"x" * 249 + b"\xe9", "ключ".encode(), b"k:e:y", b"-", b"0",
                         b"END", b"VALUE"]
        self.bad_keys = [b"K" * 251, b"L" * 300]
        self.big_keys = [b"bigkey%04d" % i for i in range(2)]   # 10 bytes each
        self.malformed_rate = {"mixed": 0.12, "malformed": 0.45, "noreply": 0.12,
                               "split": 0.12, "meta": 0.15}[profile]
        self.noreply_rate = {"mixed": 0.12, "malformed": 0.15, "noreply": 0.6,
                             "split": 0.12, "meta": 0.25}[profile]
        self.split_rate = {"mixed": 0.12, "malformed": 0.12, "noreply": 0.12,
                           "split": 0.8, "meta": 0.2}[profile]
        # "meta": this share of the units are meta commands
        self.meta_rate = 0.6 if profile == "meta" else 0.0
        self.big_rate = 0.0006
        self.first = False
        # Keys fetched earlier in the current batch: memcached holds a
        # reference to a fetched item until its reply is written, and incr /
        # decr rewrite a value in place only when nobody holds one, so an
        # incr after a get of the same key in one batch depends on timing.
        self.batch_reads = set()
        r.random()

    # ---- small draws ----

    def chance(self, p):
        return self.rng.random() < p

    def key(self, allow_bad=True):
        r = self.rng.random()
        if allow_bad and r < 0.025:
            return self.rng.choice(self.bad_keys), False
        if r < 0.15:
            return self.rng.choice(self.odd_keys), True
        if r < 0.25:
            return self.rng.choice(self.num_keys), True
        return self.rng.choice(self.keys), True

    def tok(self, table, malformed):
        good = [t for t in table if t.ok]
        bad = [t for t in table if not t.ok]
        return self.rng.choice(bad if malformed else good)

    def sep(self):
        # Runs of spaces collapse; only the space separates tokens.
        return b"  " if self.chance(0.03) else b" "

    def eol(self):
        r = self.rng.random()
        if r < 0.06:
            return b"\n"
        return b"\r\n"

    def lead(self):
        return b" " if self.chance(0.02) else b""

    def line(self, words, trailing_space=False):
        """A command line as unit parts (a CasRef stays a part of its own)."""
        sep = self.sep()
        parts = [self.lead()]
        for i, w in enumerate(words):
            if i:
                parts.append(sep)
            if isinstance(w, tuple):
                parts.extend(w)          # a meta flag glued to a CasRef: (b"C", ref)
            else:
                parts.append(w)
        if trailing_space or self.chance(0.02):
            parts.append(b" ")
        parts.append(self.eol())
        return parts

    def payload(self, n, safe=True):
        """n bytes of value.  A safe payload, if parsed as commands, only
        yields ERROR lines (see COMMAND_WORDS)."""
        r = self.rng
        if n == 0:
            return b""
        if not safe and self.chance(0.3):
            data = r.randbytes(n)
            return data.replace(b"MN", b"mN")
        kind = r.random()
        if kind < 0.6:
            alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
        elif kind < 0.85:
            alphabet = b"abcXYZ019 \t\x80\xfe\xff:"
        else:
            alphabet = b"ab \r\n\tEND"
        data = bytes(r.choice(alphabet) for _ in range(min(n, 64)))
        if n > 64:
            data = (data * (n // len(data) + 1))[:n]
        if safe and not payload_is_safe(data):
            data = b"_" + data[1:]
            if not payload_is_safe(data):
                data = b"_" * n
        return data

    def value_len(self):
        r = self.rng.random()
        if r < 0.55:
            return self.rng.randrange(0, 12)
        if r < 0.85:
            return self.rng.randrange(12, 200)
        if r < 0.98:
            return self.rng.randrange(200, 4000)
        return self.rng.randrange(4000, 120000)

    # ---- units ----

    def unit(self, first=False):
        """One request.  `first`: it starts a batch, so every earlier reply has
        been read (see retrieval)."""
        self.first = first
        if first:
            self.batch_reads = set()
        if self.meta_rate and self.chance(self.meta_rate):
            return self.meta_unit()
        r = self.rng.random()
        table = [
            (0.15, self.storage_set), (0.05, self.storage_add), (0.05, self.storage_replace),
            (0.05, self.storage_append), (0.05, self.storage_prepend), (0.08, self.storage_cas),
            (0.11, self.retrieval_get), (0.07, self.retrieval_gets), (0.02, self.retrieval_bget),
            (0.03, self.retrieval_gat), (0.03, self.retrieval_gats), (0.04, self.touch),
            (0.06, self.delete), (0.06, self.incr), (0.04, self.decr), (0.01, self.flush_all),
            (0.01, self.version), (0.01, self.verbosity), (0.01, self.mn), (0.01, self.stats),
            (0.005, self.cache_memlimit), (0.045, self.garbage),
        ]
        acc = 0.0
        for weight, fn in table:
            acc += weight
            if r < acc:
                return fn()
        return self.garbage()

    def storage(self, cmd, with_cas=False):
        r = self.rng
        malformed = self.chance(self.malformed_rate)
        noreply = self.chance(self.noreply_rate)
        key, key_ok = self.key()
        if self.chance(self.big_rate):
            return self.big_storage(cmd, noreply)
        if key in self.num_keys and self.chance(0.7):
            value = r.choice(NUMERIC_VALUES)
        else:
            value = None
        # Which part is broken when the line is malformed.
        broken = r.choice(["flags", "exptime", "length", "cas", "tokens", "data", "key"]) \
            if malformed else None
        if broken == "cas" and not with_cas:
            broken = "data"
        if broken == "key":
            key, key_ok = r.choice(self.bad_keys), False
        flags = self.tok(FLAGS, broken == "flags")
        exptime = self.tok(EXPTIMES, broken == "exptime")
        n = len(value) if value is not None else self.value_len()
        tokens_mode = None
        if broken == "tokens":
            kind = r.random()
            tokens_mode = "short" if kind < 0.4 else "long" if kind < 0.7 else "extra"
        rejected = broken not in (None, "data", "tokens") or tokens_mode in ("short", "long")
        if (rejected or not key_ok) and n > 1000:
            # A rejected line's data is parsed as commands: keep it one short line.
            n = r.randrange(0, 1000)
            value = None
        if broken == "length":
            length = Tok(r.choice([b"-1", b"abc", b"1_0", b"0x10", b"2147483648", b"-2147483648",
                                   b"18446744073709551616", b"1.5", b"%da" % n]), False)
            n = min(n, 1000)
        else:
            length = Tok(r.choice([b"%d" % n] * 8 + [b"+%d" % n, b"0%d" % n,
                                                        b"%d" % (n + 4294967296)]), True)
        words = [cmd, key, flags.text, exptime.text, length.text]
        cas_ok = True
        if with_cas:
            if broken == "cas":
                words.append(r.choice(CAS_BAD))
                cas_ok = False
            else:
                words.append(self.cas_token(key))
        tokens_ok = True
        if broken == "tokens":
            if tokens_mode == "short":
                words = words[:-1]                     # one token short: ERROR
                tokens_ok = False
            elif tokens_mode == "long":
                words += [b"x", b"noreply"]            # too many: ERROR
                noreply = False
                tokens_ok = False
            else:
                words += [b"extra"]                    # a sixth token is ignored
                noreply = False
        if noreply and broken != "tokens":
            words.append(b"noreply")
        accepted = key_ok and flags.ok and exptime.ok and length.ok and cas_ok and tokens_ok
        if value is None:
            value = self.payload(n, safe=not accepted or self.chance(0.5))
        head = self.line(words)
        # A rejected line leaves its data to be parsed as commands.
        if sum(len(p) for p in head if isinstance(p, bytes)) > SAFE_LINE:
            head = self.line([cmd, b"k0", b"0", b"0", b"%d" % n])
            accepted = True
        if broken == "data" and accepted:
            return Unit(head + self.bad_block(n, value), cmd.decode())
        return Unit(head + [value, b"\r\n"], cmd.decode())

    def bad_block(self, n, value):
        """A data block whose length disagrees with the line.  The server
        reads exactly n + 2 bytes, answers CLIENT_ERROR bad data chunk unless
        they end in \\r\\n, and parses the rest as commands; whatever follows
        is padded so the rest is a whole line."""
        r = self.rng
        kind = r.random()
        if kind < 0.4:
            data = value + self.payload(r.randrange(1, 6), safe=True) + b"\r\n"   # too long
        elif kind < 0.7 and n > 0:
            data = value[:r.randrange(0, n)] + b"\r\n"                          # too short
        elif kind < 0.85:
            data = value + r.choice([b"\n", b"\r", b"\rx", b"xy", b"\n\r"])     # bad terminator
        else:
            data = value + b"\r\r\n"
        if len(data) < n + 2:
            # Too short: the server takes the next bytes as data; give it filler
            # that also ends its block, then a line of its own.
            data += b"_" * (n + 2 - len(data))
        rest = data[n + 2:]
        if rest and not rest.endswith(b"\n"):
            data += b"\r\n"
            rest = data[n + 2:]
        if rest and not payload_is_safe(rest.rstrip(b"\r\n")):
            data = data[:n + 2] + b"_\r\n"
        return [data]

    def big_storage(self, cmd, noreply):
        """Values at the -I 1m boundary: stored, or too large (swallowed)."""
        r = self.rng
        key = r.choice(self.big_keys)
        flags = r.choice([b"0", b"0", b"1"])
        limit = MAX_ITEM_10B_KEY - (4 if flags != b"0" else 0)
        n = limit + r.choice([0, 1, -1, 2, 100])
        words = [cmd, key, flags, b"0", b"%d" % n]
        if cmd == b"cas":
            words.append(self.cas_token(key))
        if noreply:
            words.append(b"noreply")
        value = self.payload(n, safe=False)
        return Unit(self.line(words) + [value, b"\r\n"], cmd.decode() + "-big")

    def cas_token(self, key):
        r = self.rng.random()
        if r < 0.7:
            return CasRef(key)
        if r < 0.8:
            return CasRef(self.rng.choice(self.keys))   # another key's unique
        return self.rng.choice([b"0", b"18446744073709551615", b"+1", b"1"])

    def storage_set(self):
        return self.storage(b"set")

    def storage_add(self):
        return self.storage(b"add")

    def storage_replace(self):
        return self.storage(b"replace")

    def storage_append(self):
        return self.storage(b"append")

    def storage_prepend(self):
        return self.storage(b"prepend")

    def storage_cas(self):
        return self.storage(b"cas", with_cas=True)

    def some_keys(self, max_keys=8, budget=SAFE_LINE, allow_bad=True):
        r = self.rng
        count = 1 if r.random() < 0.5 else r.randrange(1, max_keys + 1)
        keys = [self.key(allow_bad=allow_bad and r.random() < 0.3)[0] for _ in range(count)]
        while sum(len(k) + 1 for k in keys) > budget and len(keys) > 1:
            keys.pop()
        return keys

    def retrieval(self, cmd, with_ttl=False):
        r = self.rng
        words = [cmd]
        if with_ttl:
            words.append(self.tok(EXPTIMES, self.chance(self.malformed_rate / 2)).text)
        if cmd in (b"get", b"gets") and r.random() < 0.03:
            # Multi-get of hundreds of keys: only get/gets may exceed 2048 bytes.
            keys = [r.choice(self.keys + self.num_keys) for _ in range(r.randrange(100, 400))]
        elif r.random() < 0.02:
            keys = []                                     # no key
        else:
            # A key over 250 bytes makes memcached drop every reply it has not
            # transmitted yet, which depends on its read boundaries: only
            # where nothing is pending, at the start of a batch.
            keys = self.some_keys(allow_bad=self.first)
        if not self.first and any(len(k) > 250 for k in keys):
            keys = [k for k in keys if len(k) <= 250] or [b"k0"]
        if r.random() < 0.03:
            keys.append(b"noreply")                       # just a key here
        self.batch_reads.update(keys)
        return Unit(self.line(words + keys), cmd.decode())

    def retrieval_get(self):
        return self.retrieval(b"get")

    def retrieval_gets(self):
        return self.retrieval(b"gets")

    def retrieval_bget(self):
        return self.retrieval(b"bget")

    def retrieval_gat(self):
        return self.retrieval(b"gat", with_ttl=True)

    def retrieval_gats(self):
        return self.retrieval(b"gats", with_ttl=True)

    def with_noreply(self, words):
        if self.chance(self.noreply_rate):
            words.append(b"noreply")
        return words

    def touch(self):
        key, _ = self.key()
        words = [b"touch", key, self.tok(EXPTIMES, self.chance(self.malformed_rate)).text]
        if self.chance(self.malformed_rate / 3):
            words = words[:self.rng.choice([1, 2])] if self.chance(0.5) else words + [b"a", b"b"]
        return Unit(self.line(self.with_noreply(words)), "touch")

    def delete(self):
        key, _ = self.key()
        words = [b"delete", key]
        if self.chance(self.malformed_rate):
            words.append(self.rng.choice([b"0", b"0", b"1", b"-1", b"abc", b"00", b"0 0", b"noreply x"]))
        elif self.chance(0.05):
            words.append(b"0")                              # legacy form
        if self.chance(0.02):
            words = [b"delete"]
        return Unit(self.line(self.with_noreply(words)), "delete")

    def arith(self, cmd):
        key = self.rng.choice(self.num_keys) if self.chance(0.8) else self.key()[0]
        if key in self.batch_reads:
            fresh = [k for k in self.num_keys if k not in self.batch_reads]
            key = self.rng.choice(fresh) if fresh else b"n9"
        words = [cmd, key, self.tok(DELTAS, self.chance(self.malformed_rate)).text]
        if self.chance(self.malformed_rate / 3):
            words = words[:2] if self.chance(0.5) else words + [b"x", b"y"]
        return Unit(self.line(self.with_noreply(words)), cmd.decode())

    def incr(self):
        return self.arith(b"incr")

    def decr(self):
        return self.arith(b"decr")

    def flush_all(self):
        # Never a positive delay: it would fire during the run, and it makes
        # memcached resurrect flushed items that were not reaped yet.
        words = [b"flush_all"]
        r = self.rng.random()
        if r < 0.4:
            pass
        elif r < 0.6:
            words.append(self.rng.choice([b"0", b"-1", b"-100", b"00", b"-0"]))
        elif r < 0.8:
            words.append(self.rng.choice([b"abc", b"1_0", b"0x10", b"1.5", b"18446744073709551616"]))
        else:
            words.extend([b"0", b"x", b"y"])
        return Unit(self.line(self.with_noreply(words)), "flush_all")

    def version(self):
        words = [b"version"] + ([b"extra", b"tokens"] if self.chance(0.2) else [])
        return Unit(self.line(words), "version")

    def verbosity(self):
        arg = self.rng.choice([[b"0"], [b"1"], [b"0"], [b"abc"], [], [b"1", b"2", b"3"], [b"-1"],
                               [b"4294967296"], [b"+0"]])
        return Unit(self.line(self.with_noreply([b"verbosity"] + arg)), "verbosity")

    def mn(self):
        words = [b"mn"] + ([b"junk"] if self.chance(0.3) else [])
        return Unit(self.line(words), "mn")

    def stats(self):
        # Only the forms whose replies do not depend on counters or timing.
        arg = self.rng.choice([b"reset", b"reset", b"nonsense", b"settingsx", b"RESET", b"items_",
                               b"reset extra"])
        return Unit(self.line([b"stats", arg]), "stats")

    def cache_memlimit(self):
        # 1024 keeps the -m 1024 the servers were started with.
        arg = self.rng.choice([[b"1024"], [b"abc"], [], [b"1024", b"noreply"], [b"-1"], [b"1_0"]])
        return Unit(self.line([b"cache_memlimit"] + arg), "cache_memlimit")

    def garbage(self):
        r = self.rng
        kind = r.random()
        if kind < 0.2:
            line = r.choice([b"SET k 0 0 1", b"GET k0", b"Get k0", b"gets", b"get", b"incr",
                             b"decr k0", b"touch k0", b"cas k0 0 0 1", b"foo", b"flush_all_",
                             b"versions", b"sett k 0 0 1", b"getk0", b"bget", b"gat", b"gats",
                             b"gat 100", b"gats 100", b"gat abc k0", b"delete", b"quitx"])
            return Unit([line + self.eol()], "unknown")
        if kind < 0.4:
            self.batch_reads.update([b"k0", b"k0\r", b"k1"])
            return Unit([r.choice([b"\r\n", b"\n", b"\r\r\n", b" \r\n", b"  \n", b"\t\r\n",
                                   b"\x00\r\n", b"get k0\r\r\n", b"get k0\x00k1\r\n",
                                   b"get\tk0\r\n", b"set\tk0 0 0 1\r\n"])], "empty")
        if kind < 0.7:
            n = r.randrange(1, 60)
            junk = bytes(r.choice(b"abcXYZ 019\t\x80\xff\x01:-_") for _ in range(n))
            if not payload_is_safe(junk):
                junk = b"_" + junk
            return Unit([junk + self.eol()], "junk")
        if kind < 0.85:
            # A storage line whose data never comes as data: it becomes commands.
            return Unit(self.line([b"set", b"k0", b"0", b"0", b"-1"]) + [b"abc\r\n"], "set-neg")
        # Pipelined burst of small valid requests in one unit.
        k = r.choice(self.keys)
        self.batch_reads.update(self.keys)
        burst = b"".join([b"set %s 0 0 1\r\n%d\r\n" % (k, i % 10) if i % 3 == 0 else
                          b"get %s %s\r\n" % (k, r.choice(self.keys)) for i in range(r.randrange(5, 40))])
        return Unit([burst], "burst")

    # ---- meta commands ----

    def meta_unit(self):
        r = self.rng.random()
        table = [(0.36, self.meta_get), (0.3, self.meta_set), (0.12, self.meta_delete),
                 (0.15, self.meta_arith), (0.02, self.mn), (0.05, self.meta_garbage)]
        acc = 0.0
        for weight, fn in table:
            acc += weight
            if r < acc:
                return fn()
        return self.meta_garbage()

    def meta_key(self, keys=None):
        """(key word, raw key or None, flag b wanted).  Sometimes the key
        travels base64-encoded (flag b), sometimes that encoding is broken."""
        r = self.rng.random()
        if keys is not None:
            raw = self.rng.choice(keys)
        else:
            raw, ok = self.key()
            if not ok:
                return raw, None, False
        if r < 0.12:
            word = base64.b64encode(raw)
            return word, (raw if len(word) <= 250 else None), True
        if r < 0.14:
            return self.rng.choice([b"k", b"YQ", b"a-_9", b"====", b"azE"]), None, True
        return raw, raw, False

    def opaque(self):
        r = self.rng
        if self.chance(0.03):
            return b"O" + b"z" * r.randrange(OPAQUE_MAX, OPAQUE_MAX + 10)   # too long
        n = r.choice([0, 1, 2, 4, 8, OPAQUE_MAX - 1])
        return b"O" + bytes(r.choice(b"abcXYZ0189-_:.") for _ in range(n))

    def meta_cas(self, key):
        """A compare token: the unique last seen for a key, or a literal."""
        r = self.rng.random()
        if r < 0.65 and key is not None:
            return (b"C", CasRef(key))
        if r < 0.8:
            return (b"C", CasRef(self.rng.choice(self.keys)))
        return b"C" + self.rng.choice(CAS_LITERAL)

    def pick_flags(self, pool):
        """The flags of pool [(probability, token or callable)] that are drawn."""
        out = []
        for p, f in pool:
            if self.chance(p):
                out.append(f() if callable(f) else f)
        return out

    def meta_break(self, flags):
        """One way for a meta line to be refused."""
        r = self.rng
        kind = r.random()
        flags = list(flags)
        if kind < 0.25:
            flags.insert(r.randrange(len(flags) + 1), r.choice(META_UNKNOWN))
        elif kind < 0.45:
            # a flag twice: only its first byte counts
            first = [f[0] if isinstance(f, tuple) else f[:1] for f in flags] or [b"v", b"v"]
            flags.append(r.choice(first) + r.choice([b"", b"1", b"y"]))
            if len(first) == 2 and not flags[:-1]:
                flags.append(b"v")
        elif kind < 0.7:
            flags.insert(r.randrange(len(flags) + 1), r.choice(META_BAD_NUMBERS))
        elif kind < 0.8:
            flags.append(r.choice([b"M", b"MSS", b"MEE"]))
        elif kind < 0.9:
            flags += [b"P"] * r.randrange(18, 25)                 # 20 words or more
        else:
            flags.append(b"O" + b"y" * r.randrange(OPAQUE_MAX, OPAQUE_MAX + 20))
        return flags

    def meta_ttl(self):
        return self.tok(EXPTIMES, False).text

    def meta_get(self):
        r = self.rng
        word, raw, binary = self.meta_key()
        flags = [b"b"] if binary else []
        flags += self.pick_flags([
            (0.55, b"v"), (0.3, b"k"), (0.3, b"c"), (0.2, b"f"), (0.2, b"s"), (0.15, b"h"),
            (0.1, b"u"), (0.15, b"t"), (self.noreply_rate, b"q"), (0.3, self.opaque),
            (0.03, lambda: r.choice([b"Pfoo", b"L/path/", b"P"])),
            (0.12, lambda: b"N" + self.meta_ttl()),
            (0.08, lambda: b"R" + r.choice(RECACHE)),
            (0.1, lambda: b"T" + self.meta_ttl()),
            # the other commands' flags, which mg accepts and ignores
            (0.02, lambda: r.choice([b"I", b"F5", b"MA", b"D3", b"J1", b"C0"])),
        ])
        if self.chance(self.malformed_rate):
            flags = self.meta_break(flags)
        r.shuffle(flags)
        if raw is not None:
            self.batch_reads.add(raw)
        return Unit(self.line([b"mg", word] + flags), "mg")

    def meta_delete(self):
        r = self.rng
        word, raw, binary = self.meta_key()
        flags = [b"b"] if binary else []
        flags += self.pick_flags([
            (self.noreply_rate, b"q"), (0.25, b"k"), (0.25, self.opaque),
            (0.2, lambda: self.meta_cas(raw)), (0.35, b"I"),
            (0.15, lambda: b"T" + self.meta_ttl()),
        ])
        if self.chance(self.malformed_rate):
            flags = self.meta_break(flags)
        r.shuffle(flags)
        return Unit(self.line([b"md", word] + flags), "md")

    def meta_arith(self):
        r = self.rng
        word, raw, binary = self.meta_key(self.num_keys if self.chance(0.8) else None)
        if raw in self.batch_reads:
            # memcached rewrites a number in place only when no pending reply
            # holds the item (see batch_reads)
            fresh = [k for k in self.num_keys if k not in self.batch_reads]
            raw = word = r.choice(fresh) if fresh else b"n9"
            binary = False
        flags = [b"b"] if binary else []
        flags += self.pick_flags([
            (0.5, b"v"), (0.2, b"c"), (0.15, b"t"), (0.2, b"k"), (self.noreply_rate, b"q"),
            (0.2, self.opaque), (0.25, lambda: b"N" + self.meta_ttl()),
            (0.15, lambda: b"J" + self.tok(DELTAS, False).text),
            (0.4, lambda: b"D" + self.tok(DELTAS, False).text),
            (0.1, lambda: b"T" + self.meta_ttl()),
            (0.3, lambda: b"M" + self.tok(MA_MODES, self.chance(0.2)).text),
            (0.1, lambda: self.meta_cas(raw)),
        ])
        if self.chance(self.malformed_rate):
            flags = self.meta_break(flags)
        r.shuffle(flags)
        return Unit(self.line([b"ma", word] + flags), "ma")

    def meta_set(self):
        r = self.rng
        word, raw, binary = self.meta_key()
        if self.chance(self.big_rate * 3):
            return self.meta_set_big()
        if raw in self.num_keys and self.chance(0.7):
            value = r.choice(NUMERIC_VALUES)
            n = len(value)
        else:
            value = None
            n = self.value_len()
        flags = [b"b"] if binary else []
        flags += self.pick_flags([
            (0.3, b"c"), (0.2, b"k"), (self.noreply_rate, b"q"), (0.25, self.opaque),
            (0.2, lambda: b"F" + self.tok(FLAGS, False).text),
            (0.2, lambda: b"T" + self.meta_ttl()),
            (0.15, lambda: self.meta_cas(raw)), (0.1, b"I"),
            (0.35, lambda: b"M" + self.tok(MS_MODES, self.chance(0.1)).text),
            # flags ms accepts and ignores
            (0.02, lambda: r.choice([b"v", b"s", b"t", b"h", b"u", b"N30", b"R30"])),
        ])
        length = Tok(r.choice([b"%d" % n] * 8 + [b"+%d" % n, b"0%d" % n]), True)
        broken = None
        if self.chance(self.malformed_rate):
            broken = r.choice(["flags", "flags", "length", "words", "data", "nolength"])
        if broken == "flags":
            flags = self.meta_break(flags)
        elif broken == "length":
            length = Tok(r.choice([b"-1", b"abc", b"1_0", b"0x10", b"2147483647", b"-2147483648",
                                   b"18446744073709551616", b"1.5", b"%da" % n]), False)
        elif broken == "words":
            flags += [b"P"] * r.randrange(18, 25)
        r.shuffle(flags)
        words = [b"ms", word] if broken == "nolength" else [b"ms", word, length.text] + flags
        # memcached reads the length only for a line it has not refused
        # already (key, word count); without it the data block is parsed as
        # commands, with it the block is taken even when a flag is refused
        read_block = len(word) <= 250 and 3 <= len(words) <= META_MAX_WORDS and length.ok
        if not read_block and n > 1000:
            n = r.randrange(0, 1000)
            value = None
        if value is None:
            value = self.payload(n, safe=not read_block or self.chance(0.5))
        head = self.line(words)
        if sum(len(p) for p in head if isinstance(p, bytes)) > SAFE_LINE:
            head = self.line([b"ms", b"k0", b"%d" % n])
            read_block = True
        if broken == "data" and read_block:
            return Unit(head + self.bad_block(n, value), "ms")
        return Unit(head + [value, b"\r\n"], "ms")

    def meta_set_big(self):
        """Values at the -I 1m boundary: stored, or too large (swallowed, and
        the old item deleted in every mode)."""
        r = self.rng
        key = r.choice(self.big_keys)
        fl = r.choice([[], [], [b"F1"]])
        limit = MAX_ITEM_10B_KEY - (4 if fl else 0)
        n = limit + r.choice([0, 1, -1, 2, 100])
        mode = r.choice([[], [b"MS"], [b"ME"], [b"MA"], [b"MR"]])
        flags = fl + mode + ([b"q"] if self.chance(self.noreply_rate) else [])
        value = self.payload(n, safe=False)
        return Unit(self.line([b"ms", key, b"%d" % n] + flags) + [value, b"\r\n"], "ms-big")

    def meta_garbage(self):
        line = self.rng.choice([b"mg", b"ms", b"md", b"ma", b"mx k", b"mgg k", b"MG k", b"m k",
                                b"ms k", b"mz", b"mn0"])
        return Unit([line + self.eol()], "meta-garbage")

    # ---- session end ----

    def closer(self):
        """A request after which the server closes the connection."""
        r = self.rng
        kind = r.random()
        if kind < 0.4:
            return Unit([r.choice([b"quit\r\n", b"quit\n", b"quit extra\r\n"])], "quit", closes=True)
        if kind < 0.75:
            # More than 2048 bytes without a newline, not a get: closed.
            n = r.randrange(2100, 6000)
            head = r.choice([b"", b"set ", b"gat 100 ", b"bget ", b"foo "])
            return Unit([head + b"k" * n], "too-long", closes=True)
        return Unit([r.choice([b"GET / HTTP/1.1\r\n", b"HEAD /index.html HTTP/1.0\r\n",
                               b"foo bar HTTP/1.1\r\n"])], "http", closes=True)


def payload_is_safe(data):
    if b"MN" in data or b"HTTP/" in data or b"\x00" in data or len(data) > SAFE_LINE:
        return False
    for line in data.split(b"\n"):
        words = [w for w in line.rstrip(b"\r").split(b" ") if w]
        if words and words[0] in COMMAND_WORDS:
            return False
    return True
