"""Differential tests: the same seeded request streams to memcached 1.6.18
and to each backend, replies compared byte for byte (cas uniques
structurally).  Against the backend "memcached" this checks the harness: two
memcacheds must agree.

Environment:
  MPCACHE_DIFF_SEED   base seed (default 1618); printed on failure
  MPCACHE_DIFF_OPS    total operations over the profiles (default 50000)
"""

import os
import time

import pytest

from tests.differential.harness import NON_NUMERIC_LINE, Differ, summarize
from tests.differential.gen import Unit
from tests.support import servers
from tests.support.servers import BACKENDS, ServerProcess

SEED = int(os.environ.get("MPCACHE_DIFF_SEED", "1618"))
TOTAL_OPS = int(os.environ.get("MPCACHE_DIFF_OPS", "50000"))
# Share of the operations per profile.
PROFILES = {"mixed": 0.6, "malformed": 0.15, "noreply": 0.1, "split": 0.15}
SERVER_FLAGS = dict(threads=2, memory_mb=1024, max_item_size="1m")
# memcached's background LRU threads take references to items, and incr/decr
# rewrites a value in place only when nobody else holds one: without them the
# reference answers deterministically.  -B ascii on both: a session whose
# first byte is junk 0x80 would otherwise switch to the binary protocol,
# which tests/differential/test_binary_differential.py compares on its own.
QUIET_MEMCACHED = ("-o", "no_lru_crawler,no_lru_maintainer", "-B", "ascii")
TEXT_ONLY = ("-B", "ascii")


def server_for(backend):
    extra = QUIET_MEMCACHED if not BACKENDS[backend].is_mpcache else TEXT_ONLY
    return ServerProcess(BACKENDS[backend], extra=extra, **SERVER_FLAGS)


def start_pair(backend):
    return servers.start_pair(server_for("memcached"), server_for(backend))


@pytest.fixture(scope="module")
def pair(backend):
    ref, cand = start_pair(backend)
    yield ref, cand
    ref.stop()
    cand.stop()


# Distinct differences minimized per test (each replay costs round trips).
MAX_MINIMIZED = 4


def fresh_reference_agrees(diff):
    """Whether a memcached started afresh answers the minimized requests as
    the candidate did: then the long-running reference was the odd one out
    (memcached 1.6.18 that has served a while sometimes calls a number
    non-numeric in incr/decr; a fresh one does not)."""
    srv = server_for("memcached")
    srv.start()
    try:
        return Differ.replay_alone(srv.addr, diff.units) == diff.cand_reply
    finally:
        srv.stop()


NON_NUMERIC = NON_NUMERIC_LINE + b"\r\n"


def reference_calls_a_number_non_numeric(differ, diff):
    """memcached 1.6.18 that has served a while sometimes answers incr/decr
    (and ma) on a plainly numeric value with NON_NUMERIC (it depends on the server's
    history, not on the value: a fresh memcached computes the number).  The
    cause, in its util.c: for a number of 2**63 or more safe_strtoull looks
    for a '-' with strchr over the item's data, which is not NUL-terminated,
    so it reads on into whatever an earlier item left in the chunk.
    True when that is what happened: the value the reference holds, stored
    on a fresh memcached, takes the increment as the candidate did."""
    last = diff.units[-1]
    if last.kind not in ("incr", "decr", "ma") or diff.ref_reply != NON_NUMERIC:
        return False
    words = [w for w in last.render({}).split(b"\n")[0].rstrip(b"\r").split(b" ") if w]
    if len(words) < 3:
        return False
    key = words[1]
    probe = Unit([b"get " + key + b"\r\n"], "get")
    held = differ.replay(diff.units[:-1] + [probe], stop_at_difference=False)
    parts = held.split(b"\r\n", 1)
    head = parts[0].split(b" ")
    if len(head) != 4 or head[0] != b"VALUE":
        return False
    size = int(head[3])
    value = parts[1][:size]
    restore = Unit([b"set %s %s 0 %d\r\n%s\r\n" % (key, head[2], size, value)], "set")
    srv = server_for("memcached")
    srv.start()
    try:
        fresh = Differ.replay_alone(srv.addr, [restore, last])
    finally:
        srv.stop()
    if last.kind == "ma":
        # ma's reply carries a cas the fresh server numbers anew: what matters
        # is that a fresh memcached takes the value as a number
        return not fresh.startswith(b"CLIENT_ERROR")
    return fresh == diff.cand_reply


def triage(differ, diffs):
    """Splits differences into confirmed ones (they come back when the
    session is replayed and a fresh memcached agrees with the reference, or
    the candidate hung or closed) and reference-dependent ones, which
    memcached itself produces: e.g. it drops replies it has not transmitted
    yet in some error paths, and rewrites incr results in place only when no
    pending reply holds the item."""
    confirmed, flaky = [], []
    seen = set()
    for d in diffs:
        sig = d.signature()
        if sig in seen:
            continue
        seen.add(sig)
        if len(confirmed) + len(flaky) >= MAX_MINIMIZED:
            confirmed.append(d)          # not checked: counts against the candidate
            continue
        m, reproduced = differ.minimize(d)
        if d.candidate_broke():
            confirmed.append(m)
        elif (not reproduced or fresh_reference_agrees(m)
              or reference_calls_a_number_non_numeric(differ, m)):
            flaky.append(m)
        else:
            confirmed.append(m)
    return confirmed, flaky


def report(differ, confirmed, diffs, cand):
    alive = "" if cand.alive() else f"\n{cand.name} DIED:\n{cand.output()}"
    first = confirmed[0]
    return (f"{cand.name} differs from memcached (seed {differ.seed}, {differ.ops} ops in "
            f"{differ.batches} batches){alive}\nfirst difference:\n{first.describe()}\n\n"
            + summarize(confirmed) + f"\n({len(diffs)} differing batches in all)")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_differential(pair, profile):
    ref, cand = pair
    seed = SEED * 1000 + list(PROFILES).index(profile)
    n_ops = max(1, int(TOTAL_OPS * PROFILES[profile]))
    differ = Differ(ref.addr, cand.addr, seed, profile)
    t0 = time.monotonic()
    diffs = differ.run(n_ops)
    elapsed = time.monotonic() - t0
    print(f"{cand.name}/{profile}: seed {seed}, {differ.ops} ops, {differ.batches} batches, "
          f"{elapsed:.1f}s, {len(diffs)} differences")
    assert ref.alive(), f"memcached died: {ref.output()}"
    confirmed, flaky = triage(differ, diffs)
    for d in flaky:
        print(f"reference-dependent difference (not reproduced on replay, or a fresh memcached "
              f"answers as the candidate; seed {seed}):\n{d.describe(600)}")
    assert not confirmed, report(differ, confirmed, diffs, cand)
    assert cand.alive(), f"{cand.name} died:\n{cand.output()}"
    assert differ.ops >= n_ops


def scripted(differ, script):
    """Runs hand-written requests (one batch each) through the differ."""
    differ.reset()
    for req in script:
        differ.run_batch([Unit([req], req.split(b" ")[0].decode(errors="replace"))])
    differ.close()
    return differ.diffs


def test_delayed_flush_all(backend):
    """flush_all with a delay that never fires during the test: nothing is
    flushed.  On fresh servers: after an immediate flush, memcached would
    resurrect unreaped items, which is timing-dependent."""
    ref, cand = start_pair(backend)
    try:
        differ = Differ(ref.addr, cand.addr, SEED)
        differ.reset = lambda: (differ.ref.connect(), differ.cand.connect())
        diffs = scripted(differ, [
            b"set a 0 0 1\r\n1\r\nset b 0 100000 1\r\n2\r\n",
            b"flush_all 100000\r\n",
            b"get a b\r\n",
            b"flush_all 200000 noreply\r\n",
            b"set c 0 0 1\r\n3\r\n",
            b"gets a b c\r\n",
            b"flush_all +100000\r\n",
            b"flush_all 100000 x\r\n",
            b"get a b c\r\n",
        ])
        assert not diffs, summarize(diffs)
    finally:
        ref.stop()
        cand.stop()
