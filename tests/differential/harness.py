"""Sends the same request stream to a reference memcached and to a candidate
server and compares the replies byte for byte.

cas uniques are the one thing two correct servers may number differently:
each side's uniques are renamed to <cas#N> in the order that side first showed
them (in VALUE lines and in meta replies' c flags alike), so the comparison
checks that the same items share or change uniques at the same moments.
Requests carrying a unique (`CasRef`) get each server's own value for it.  A
meta reply's remaining TTL (t flag) counts down with each server's own clock,
so it is compared as "some seconds" (t-1, no expiry, stays exact).

A batch is a few units sent back to back (sometimes cut into several writes at
random bytes), followed by `mn`; both sides are read up to the `MN` reply.  A
session ends with a connection-closing request (both sides read to EOF) or
just by reconnecting.  After a difference both sides are reset (new
connections, flush_all) so later differences are independent.
"""

import base64
import binascii
import socket
import time
from dataclasses import dataclass, field

from tests.differential.gen import Gen, Unit
from tests.support.raw import EOF_TAG, RESET_TAG, TIMEOUT_TAG, RawConn

READ_TIMEOUT = 3.0
CLOSE_TIMEOUT = 3.0
RESET_REQUEST = b"verbosity 0\r\ncache_memlimit 1024\r\nflush_all\r\n"
RESET_REPLY = b"OK\r\nOK\r\nOK\r\n"
# The codes of meta replies whose flags carry item data.
META_CODES = (b"HD", b"VA", b"EN", b"NF", b"NS", b"EX")


class Side:
    """One server's connection and its view of cas uniques."""

    def __init__(self, name, addr):
        self.name = name
        self.addr = addr
        self.conn = None
        self.cas_index = {}       # unique -> first-seen order
        self.last_cas = {}        # key -> the unique last shown for it

    def connect(self):
        self.close()
        self.conn = RawConn(self.addr, timeout=READ_TIMEOUT)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def normalize_meta(self, line):
        """A meta reply line with its uniques renamed and TTLs blurred (a
        unique shown with the key, k flag, is recorded for it).  Returns the
        line and the size of the data block that follows it, if any."""
        words = line[:-2].split(b" ")
        size = None
        start = 1
        if words[0] == b"VA" and len(words) > 1 and words[1].isdigit():
            size = int(words[1])
            start = 2
        key = cas = None
        binary = False
        for k in range(start, len(words)):
            w = words[k]
            if w[:1] == b"c" and w[1:].isdigit() and w[1:] != b"0":
                cas = w[1:]
                words[k] = b"c<cas#%d>" % self.cas_index.setdefault(cas, len(self.cas_index))
            elif w[:1] == b"t" and w[1:].isdigit():
                words[k] = b"t<ttl>"
            elif w[:1] == b"k":
                key = w[1:]
            elif w == b"b":
                binary = True
        if key is not None and cas is not None:
            try:
                self.last_cas[base64.b64decode(key, validate=True) if binary else key] = cas
            except binascii.Error:
                pass
        return b" ".join(words) + b"\r\n", size

    def normalize(self, reply):
        """Renames cas uniques in VALUE lines and meta replies; records them
        per key."""
        out = []
        i, n = 0, len(reply)
        while i < n:
            j = reply.find(b"\n", i)
            if j < 0:
                out.append(reply[i:])
                break
            line = reply[i:j + 1]
            i = j + 1
            if line.startswith(b"VALUE "):
                parts = line[:-2].split(b" ") if line.endswith(b"\r\n") else None
                if parts and len(parts) in (4, 5) and parts[3].isdigit():
                    if len(parts) == 5 and parts[4].isdigit():
                        cas = parts[4]
                        idx = self.cas_index.setdefault(cas, len(self.cas_index))
                        self.last_cas[parts[1]] = cas
                        line = b" ".join(parts[:4]) + b" <cas#%d>\r\n" % idx
                    size = int(parts[3])
                    out.append(line)
                    out.append(reply[i:i + size + 2])
                    i += size + 2
                    continue
            elif (line[:2] in META_CODES and line.endswith(b"\r\n") and
                  (len(line) == 4 or line[2:3] == b" ")):
                line, size = self.normalize_meta(line)
                out.append(line)
                if size is not None:
                    out.append(reply[i:i + size + 2])
                    i += size + 2
                continue
            out.append(line)
        return b"".join(out)


NON_NUMERIC_LINE = b"CLIENT_ERROR cannot increment or decrement non-numeric value"


@dataclass
class Diff:
    requests: list            # rendered for the reference, one per unit
    ref_reply: bytes
    cand_reply: bytes
    kinds: list
    history: list = field(default_factory=list)   # units since the session's reset
    units: list = field(default_factory=list)
    minimized: bool = False
    previous: tuple = None    # the batch before: (requests, ref reply, cand reply)

    def candidate_broke(self):
        """The candidate hung or closed the connection where memcached did not."""
        for tag in (TIMEOUT_TAG, EOF_TAG, RESET_TAG):
            if self.cand_reply.endswith(tag) and not self.ref_reply.endswith(tag):
                return True
        return False

    def signature(self):
        ref = self.ref_reply.split(b"\r\n")
        cand = self.cand_reply.split(b"\r\n")
        for a, b in zip(ref, cand):
            if a != b:
                # A delta's result differs by its number only: one kind.
                # memcached calling a number >= 2**63 non-numeric comes in
                # many numbers and replies (incr, decr, ma with its flags),
                # each of which would use up a minimization: one kind too
                # (test_differential.reference_calls_a_number_non_numeric)
                if a.startswith(NON_NUMERIC_LINE):
                    return (a[:60], b"<a delta's result>")
                return (_number_kind(a[:60]), _number_kind(b[:60]))
        return (b"|".join(ref[len(cand):])[:60], b"|".join(cand[len(ref):])[:60])

    def describe(self, limit=3000):
        def show(b):
            r = repr(b)
            return r if len(r) <= limit else r[:limit] + f"... ({len(b)} bytes)"
        reqs = b"".join(self.requests)
        head = "minimized to" if self.minimized else "in a batch of"
        text = (f"{head} {len(self.requests)} request(s) ({', '.join(self.kinds)}):\n"
                f"  request:   {show(reqs)}\n"
                f"  memcached: {show(self.ref_reply)}\n"
                f"  candidate: {show(self.cand_reply)}")
        if self.previous and not self.minimized:
            p_req, p_ref, p_cand = self.previous
            text += (f"\n  (previous batch: {show(p_req)}\n"
                     f"   memcached: {show(p_ref)}\n   candidate: {show(p_cand)})")
        return text


def _number_kind(line):
    return b"<number>" if line.isdigit() else line


def _clip(b, n=1500):
    """Head and tail of a long byte string (the end is where framing went wrong)."""
    if len(b) <= 2 * n:
        return repr(b)
    return f"{b[:n]!r} ...({len(b) - 2 * n} bytes)... {b[-n:]!r}"


class GeneratorBug(AssertionError):
    """The reference did not answer as the generator expected."""


class Differ:
    def __init__(self, ref_addr, cand_addr, seed, profile="mixed", max_diffs=25):
        self.gen = Gen(seed, profile)
        self.ref = Side("memcached", ref_addr)
        self.cand = Side("candidate", cand_addr)
        self.seed = seed
        self.ops = 0
        self.batches = 0
        self.diffs = []
        self.max_diffs = max_diffs
        self.history = []
        self.previous = None

    # ---- session control ----

    def reset(self):
        for side in (self.ref, self.cand):
            # flush_all below invalidates every item, so no unique seen so far
            # can come back: both sides start a fresh renaming, which keeps a
            # difference from spilling into every later comparison.
            side.cas_index.clear()
            side.last_cas.clear()
            side.connect()
            reply = side.conn.call(RESET_REQUEST)
            if reply != RESET_REPLY:
                if side is self.ref:
                    raise GeneratorBug(f"reset on memcached answered {reply!r}")
                # The candidate is broken enough to fail a reset: start it over.
                side.connect()
                side.conn.call(RESET_REQUEST)
        self.history = []

    def close(self):
        self.ref.close()
        self.cand.close()

    # ---- one batch ----

    def exchange(self, units, pieces):
        """Sends units to both sides, returns (ref_requests, ref_reply, cand_reply),
        replies normalized."""
        closes = units[-1].closes
        # `mn` units answer MN too: read up to the marker's own reply.
        markers = 1 + sum(1 for u in units if u.kind == "mn")
        sent = []
        for side in (self.ref, self.cand):
            data = b"".join(u.render(side.last_cas) for u in units)
            if side is self.ref:
                sent = [u.render(side.last_cas) for u in units]
            try:
                cuts = [p for p in pieces if p < len(data)]
                side.conn.send(data if closes else data + b"mn\r\n", cuts, pause=0.0003 if cuts else 0)
            except OSError:
                pass                      # a reset shows up when reading
        replies = []
        for side in (self.ref, self.cand):
            try:
                if closes:
                    raw = side.conn.read_until_eof(CLOSE_TIMEOUT)
                else:
                    raw = side.conn.read_until_marker(READ_TIMEOUT, count=markers)
            except OSError as e:
                raw = b"<" + repr(e).encode() + b">"
            replies.append(side.normalize(raw))
        return sent, replies[0], replies[1]

    def check_reference(self, units, sent, ref_reply):
        closes = units[-1].closes
        bad = (ref_reply.endswith(TIMEOUT_TAG) or ref_reply.endswith(RESET_TAG) or
               (not closes and ref_reply.endswith(EOF_TAG)) or
               (closes and not ref_reply.endswith(EOF_TAG)))
        if bad:
            raise GeneratorBug(
                f"seed {self.seed}: memcached did not answer as the generator assumed:\n"
                f"  request: {_clip(b''.join(sent))}\n  reply:   {_clip(ref_reply)}")

    def run_batch(self, units):
        r = self.gen.rng
        total = sum(len(u.render(self.ref.last_cas)) for u in units)
        pieces = []
        if r.random() < self.gen.split_rate:
            pieces = sorted({r.randrange(1, total + 1) for _ in range(r.randrange(1, 5))})
        sent, ref_reply, cand_reply = self.exchange(units, pieces)
        self.check_reference(units, sent, ref_reply)
        self.ops += sum(u.ops() for u in units)
        self.batches += 1
        self.history.extend(units)
        previous, self.previous = self.previous, (b"".join(sent), ref_reply, cand_reply)
        if ref_reply != cand_reply:
            self.diffs.append(Diff(sent, ref_reply, cand_reply, [u.kind for u in units],
                                   history=list(self.history[:-len(units)]), units=list(units),
                                   previous=previous))
            self.reset()
            return False
        if units[-1].closes:
            self.reset_connections()
        return True

    def reset_connections(self):
        self.ref.connect()
        self.cand.connect()

    # ---- the stream ----

    def run(self, n_ops, session_ops=(200, 2000)):
        self.reset()
        r = self.gen.rng
        left_in_session = r.randrange(*session_ops)
        while self.ops < n_ops and len(self.diffs) < self.max_diffs:
            if left_in_session <= 0:
                if r.random() < 0.6:
                    # Alone in its batch: memcached drops the replies it has
                    # not transmitted yet when it closes on a bad line, and
                    # what it has transmitted depends on its read boundaries.
                    # quit flushes what precedes it, so it may share a batch.
                    closer = self.gen.closer()
                    before = []
                    if closer.kind == "quit":
                        before = [self.gen.unit(first=i == 0) for i in range(r.randrange(0, 3))]
                    self.run_batch(before + [closer])
                else:
                    self.reset_connections()
                left_in_session = r.randrange(*session_ops)
                continue
            size = 1 if r.random() < 0.3 else r.randrange(1, 20)
            units = [self.gen.unit(first=i == 0) for i in range(size)]
            self.run_batch(units)
            left_in_session -= size
        self.close()
        return self.diffs

    # ---- minimization ----

    def replay(self, units, stop_at_difference=True):
        """Replays units one per batch on fresh connections after a reset;
        returns the Diff of the first unit whose replies differ, or None.
        With stop_at_difference=False: the reference's reply to the last unit."""
        saved = (self.history, self.ref.last_cas, self.cand.last_cas)
        self.ref.last_cas, self.cand.last_cas = {}, {}
        try:
            self.reset()
            for i, u in enumerate(units):
                if u.closes and i != len(units) - 1:
                    continue
                sent, ref_reply, cand_reply = self.exchange([u], [])
                self.check_reference([u], sent, ref_reply)
                if not stop_at_difference:
                    if i == len(units) - 1:
                        return ref_reply
                    continue
                if ref_reply != cand_reply:
                    return Diff(sent, ref_reply, cand_reply, [u.kind], units=units[:i + 1])
                if u.closes:
                    return None
            return None
        finally:
            self.history, self.ref.last_cas, self.cand.last_cas = saved
            self.close()

    def minimize(self, diff, budget_s=25.0):
        """Replays the session that led to diff on the same servers (after a
        flush) one request per batch, then shrinks it: the shortest suffix
        that still shows the same difference, then delta debugging.  Returns
        (diff, reproduced); a difference that does not come back when
        replayed depended on timing and is returned unchanged."""
        deadline = time.monotonic() + budget_s
        first = self.replay(diff.history + diff.units)
        if first is None:
            return diff, False
        units = first.units
        best = first
        sig = best.signature()
        # Shortest reproducing suffix, by doubling: a few long replays at most.
        k = 1
        while k < len(units) and time.monotonic() < deadline:
            d = self.replay(units[-k:])
            if d is not None and d.signature() == sig:
                units, best = d.units, d
                break
            k *= 2
        chunk = max(1, len(units) // 2)
        while chunk >= 1 and time.monotonic() < deadline:
            i = 0
            removed = False
            while i < len(units) - 1 and time.monotonic() < deadline:
                trial = units[:i] + units[i + chunk:]
                if trial and trial[-1] is units[-1]:
                    d = self.replay(trial)
                    if d is not None and d.signature() == sig:
                        units, best, removed = d.units, d, True
                        continue
                i += chunk
            if not removed:
                chunk //= 2
        # Render the whole minimized sequence for the report.
        prefix = self.replay_render(units[:-1])
        best.requests = prefix + best.requests
        best.kinds = [u.kind for u in units]
        best.minimized = True
        return best, True

    @staticmethod
    def replay_alone(addr, units):
        """The normalized reply to the last of units, replayed one per batch on
        the server at addr (a fresh one: nothing to flush)."""
        side = Side("fresh", addr)
        side.connect()
        try:
            reply = b""
            for u in units:
                data = u.render(side.last_cas)
                if u.closes:
                    side.conn.send(data)
                    reply = side.normalize(side.conn.read_until_eof(CLOSE_TIMEOUT))
                    break
                markers = 2 if u.kind == "mn" else 1
                side.conn.send(data + b"mn\r\n")
                reply = side.normalize(side.conn.read_until_marker(READ_TIMEOUT, count=markers))
            return reply
        finally:
            side.close()

    def replay_render(self, units):
        """The requests as the reference saw them when replaying units."""
        out = []
        self.ref.last_cas = {}
        try:
            self.ref.connect()
            self.ref.conn.call(RESET_REQUEST)
            for u in units:
                data = u.render(self.ref.last_cas)
                out.append(data)
                if u.closes:
                    break
                self.ref.normalize(self.ref.conn.call(data))
        finally:
            self.ref.close()
        return out


def summarize(diffs, limit=5):
    """Distinct differences (by their first differing reply lines), with counts."""
    groups = {}
    for d in diffs:
        groups.setdefault(d.signature(), []).append(d)
    lines = [f"{len(diffs)} differing batch(es), {len(groups)} distinct:"]
    for n, (sig, ds) in enumerate(groups.items()):
        if n >= limit:
            lines.append(f"... and {len(groups) - limit} more")
            break
        lines.append(f"\n[{n + 1}] x{len(ds)}: memcached {sig[0]!r} / candidate {sig[1]!r}")
        lines.append(ds[0].describe())
    return "\n".join(lines)
