"""Binary protocol differential: seeded streams of binary requests (every
opcode memcached 1.6.18 serves, quiet forms, pipelines, cas, values from
empty to past -I, requests cut into pieces, malformed requests that close)
sent to memcached 1.6.18 and to each backend, replies compared packet by
packet, byte for byte.

cas uniques are the one field two correct servers may number differently:
each side's are renamed in the order that side first showed them, so the
comparison checks that the same items share or change uniques at the same
moments; a request carrying a unique gets each side's own value for it.

Environment:
  MPCACHE_DIFF_SEED   base seed (default 1618); printed on failure
  MPCACHE_BIN_OPS     operations per backend over the runs (default 50000)
"""

import os
import random
import struct

import pytest

from tests.support.binproto import (
    OP, BinConn, arith_extras, request, store_extras, touch_extras)
from tests.support.servers import BACKENDS, ServerProcess, start_pair

SEED = int(os.environ.get("MPCACHE_DIFF_SEED", "1618"))
TOTAL_OPS = int(os.environ.get("MPCACHE_BIN_OPS", "50000"))
RUNS = 5
MARKER = 0xFFFFFFFF
SERVER_FLAGS = dict(threads=2, memory_mb=256, max_item_size="1m")
# memcached's LRU threads take references to items (incr rewrites in place
# only without one): off, so the reference answers deterministically.
QUIET_MEMCACHED = ("-o", "no_lru_crawler,no_lru_maintainer")
ITEM_MAX = 1024 * 1024

KEYS = [b"k%d" % i for i in range(20)] + [b"n%d" % i for i in range(6)] + [b"L" * 250]
# already expired: over 30 days is an absolute time, this one in 1970
EXPIRED = 2592001
EXPTIMES = [0] * 6 + [3600, EXPIRED]


class Side:
    def __init__(self, name, addr):
        self.name = name
        self.addr = addr
        self.conn = None
        self.cas_index = {}
        self.last_cas = {}

    def connect(self):
        self.close()
        self.conn = BinConn(self.addr, timeout=5.0)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def norm(self, p, keys):
        """The packet's bytes with its cas renamed; a unique shown for a
        request's key is remembered for later cas requests."""
        cas = p.cas
        if cas:
            key = keys.get(p.opaque)
            if key is not None and p.status == 0:
                self.last_cas[key] = cas
            cas = self.cas_index.setdefault(cas, len(self.cas_index) + 1)
        return p.raw[:16] + struct.pack(">Q", cas) + p.raw[24:]


class Op:
    """An abstract request, rendered per side (cas values differ)."""

    def __init__(self, kind, key=b"", opcode=None, extras=b"", value=b"", cas_mode="none",
                 raw=None):
        self.kind = kind
        self.key = key
        self.opcode = opcode
        self.extras = extras
        self.value = value
        self.cas_mode = cas_mode
        self.raw = raw

    def render(self, side, opaque):
        if self.raw is not None:
            return self.raw
        cas = 0
        if self.cas_mode == "good":
            cas = side.last_cas.get(self.key, 0x7777777)
        elif self.cas_mode == "bad":
            cas = 0x7fffffff00
        return request(self.opcode, self.key, self.extras, self.value, opaque=opaque, cas=cas)

    def __repr__(self):
        if self.raw is not None:
            return f"raw({self.raw[:40]!r})"
        return (f"{self.kind}(key={self.key[:20]!r} ext={self.extras.hex()} "
                f"value={len(self.value)}B cas={self.cas_mode})")


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)

    def key(self):
        r = self.rng
        return KEYS[r.randrange(len(KEYS) - 1)] if r.random() < 0.97 else KEYS[-1]

    def value(self, key):
        r = self.rng
        if key.startswith(b"n") and r.random() < 0.8:
            # below 2^63: memcached reads past a larger one looking for a
            # minus sign (README, Compatibility)
            return str(r.choice([0, 1, 9, 99, 2 ** 40, r.randrange(10 ** 6)])).encode()
        x = r.random()
        if x < 0.6:
            n = r.randint(0, 40)
        elif x < 0.85:
            n = r.randint(41, 3000)
        elif x < 0.985:
            n = r.randint(8000, 40000)
        elif x < 0.998:
            n = r.randint(200000, ITEM_MAX - 400)
        else:
            n = ITEM_MAX + r.randint(1, 5000)   # too large: swallowed
        return r.randbytes(n)

    def cas_mode(self):
        x = self.rng.random()
        return "none" if x < 0.7 else "good" if x < 0.9 else "bad"

    def op(self):
        r = self.rng
        q = r.random() < 0.3
        kind = r.choices(
            ["get", "set", "add", "replace", "append", "delete", "incr", "touch", "gat",
             "flush", "noop", "version", "stat", "unknown", "sasl"],
            [30, 22, 5, 5, 6, 7, 8, 3, 6, 0.4, 2, 1, 1.5, 1, 0.5])[0]
        key = self.key()
        if kind == "get":
            name = r.choice(["get", "getk"]) + ("q" if q else "")
            return Op(name, key, OP[name])
        if kind in ("set", "add", "replace"):
            name = kind + ("q" if q else "")
            ext = store_extras(r.choice([0, 0, 1, 0xffffffff, r.getrandbits(32)]),
                               r.choice(EXPTIMES))
            return Op(name, key, OP[name], ext, self.value(key), self.cas_mode())
        if kind == "append":
            name = r.choice(["append", "prepend"]) + ("q" if q else "")
            return Op(name, key, OP[name], b"", self.value(key)[:2000],
                      "none" if r.random() < 0.8 else self.cas_mode())
        if kind == "delete":
            name = "delete" + ("q" if q else "")
            return Op(name, key, OP[name], cas_mode=self.cas_mode() if r.random() < 0.3 else "none")
        if kind == "incr":
            name = r.choice(["incr", "decr"]) + ("q" if q else "")
            # small deltas and initial values keep every result below 2^63
            ext = arith_extras(r.choice([0, 1, 5, 1000, r.getrandbits(32)]),
                               r.choice([0, 7, 2 ** 40]),
                               r.choice([0xffffffff, 0xffffffff, 0, 3600]))
            return Op(name, key, OP[name], ext,
                      cas_mode=self.cas_mode() if r.random() < 0.2 else "none")
        if kind == "touch":
            return Op("touch", key, OP["touch"], touch_extras(r.choice(EXPTIMES)))
        if kind == "gat":
            name = r.choice(["gat", "gatk"]) + ("q" if q else "")
            return Op(name, key, OP[name], touch_extras(r.choice(EXPTIMES)))
        if kind == "flush":
            name = "flush" + ("q" if q else "")
            # never a delay: memcached resurrects flushed items not reaped
            # yet once the marker moves into the future
            return Op(name, b"", OP[name], r.choice([b"", touch_extras(0)]))
        if kind == "noop":
            return Op("noop", b"", OP["noop"])
        if kind == "version":
            return Op("version", b"", OP["version"])
        if kind == "stat":
            group = r.choice([b"detail on", b"detail off", b"detail dump", b"detail x",
                              b"nosuchgroup", b"conns", b"reset"])
            return Op("stat", group, OP["stat"])
        if kind == "sasl":
            if r.random() < 0.5:
                return Op("sasl_list", b"", OP["sasl_list"])
            return Op("sasl_auth", b"PLAIN", OP["sasl_auth"], b"", b"\0user\0pass")
        # an opcode memcached does not serve: its body is swallowed
        return Op("unknown", b"", r.choice([0x1b, 0x1f, 0x30, 0x3d, 0x7f, 0xfe]), b"",
                  r.randbytes(r.randint(0, 30)))

    def closing(self):
        """A request after which the server closes."""
        r = self.rng
        k = r.choice(["quit", "quitq", "magic", "keylen", "longkey", "setext", "getext",
                      "noopbody", "extlen"])
        if k in ("quit", "quitq"):
            return Op(k, b"", OP[k])
        if k == "magic":
            return Op(k, raw=bytes([r.choice([0x00, 0x81, 0x7f, 0x47])]) + bytes(23))
        if k == "keylen":
            return Op(k, raw=request("get", b"abcd", keylen=4, bodylen=3) + b"")
        if k == "longkey":
            return Op(k, raw=request(r.choice(["get", "set", "delete"]), b"x" * 251,
                                     store_extras() if r.random() < 0.5 else b""))
        if k == "setext":
            return Op(k, raw=request("set", b"k1", touch_extras(0), b"v"))
        if k == "getext":
            return Op(k, raw=request("get", b"k1", touch_extras(0)))
        if k == "noopbody":
            return Op(k, raw=request("noop", b"", b"", b"xy"))
        return Op(k, raw=request("incr", b"k1", arith_extras()[:12]))

    def batch(self):
        r = self.rng
        x = r.random()
        if x < 0.05:
            # past -R 20: the server yields in the middle
            n = r.randint(25, 60)
            ops = [Op("getq", self.key(), OP["getq"]) if r.random() < 0.5 else self.op()
                   for _ in range(n)]
        else:
            ops = [self.op() for _ in range(r.randint(1, 12))]
        # memcached's reply to a get holds the item until it is sent, and an
        # incr or decr meanwhile makes a new item rather than pad the old
        # value in place (README, Compatibility): no incr after a read of
        # the same key in one batch
        read = set()
        for i, op in enumerate(ops):
            if op.kind[:4] in ("incr", "decr") and op.key in read:
                ops[i] = Op("getk", op.key, OP["getk"])
            if op.kind[:3] in ("get", "gat") or op.kind == "touch":
                read.add(op.key)
        closing = self.closing() if r.random() < 0.02 else None
        return ops, closing


def server_for(backend):
    extra = QUIET_MEMCACHED if not BACKENDS[backend].is_mpcache else ()
    return ServerProcess(BACKENDS[backend], extra=extra, **SERVER_FLAGS)


@pytest.fixture(scope="module")
def pair(backend):
    ref, cand = start_pair(server_for("memcached"), server_for(backend))
    yield ref, cand
    ref.stop()
    cand.stop()


# memcached transmits whenever its 16 KiB read buffer runs dry, so which
# replies a closing request drops depends on how the input was read: it goes
# in the same write only behind a batch that small, else in its own.
CLOSE_WITH_BATCH_MAX = 8000


def run_one(side, ops, closing, keys, opaque0, cuts):
    data = b"".join(op.render(side, opaque0 + i) for i, op in enumerate(ops))
    out = []
    if closing is not None and len(data) <= CLOSE_WITH_BATCH_MAX and not cuts:
        data += closing.render(side, opaque0 + len(ops))
        side.conn.send(data)
        packets, ending, rest = side.conn.read_to_eof(timeout=5.0)
        return [side.norm(p, keys) for p in packets] + [ending.encode(), rest]
    data += request("noop", opaque=MARKER)
    side.conn.send(data, pieces=cuts)
    packets, ending = side.conn.read_until(
        lambda p: p.opcode == OP["noop"] and p.opaque == MARKER)
    out = [side.norm(p, keys) for p in packets]
    if ending is not None:
        out.append(ending.encode())
    elif closing is not None:
        side.conn.send(closing.render(side, opaque0 + len(ops)))
        packets, ending, rest = side.conn.read_to_eof(timeout=5.0)
        out += [side.norm(p, keys) for p in packets] + [ending.encode(), rest]
    return out


def run_stream(ref_addr, cand_addr, seed, nops, history=None):
    gen = Gen(seed)
    sides = [Side("memcached", ref_addr), Side("candidate", cand_addr)]
    for s in sides:
        s.connect()
    diffs = []
    done = 0
    opaque = 1
    nbatch = 0
    while done < nops:
        ops, closing = gen.batch()
        keys = {opaque + i: op.key for i, op in enumerate(ops)}
        total = sum(len(op.render(sides[0], 0)) for op in ops)
        cuts = None
        if gen.rng.random() < 0.15 and total > 1:
            cuts = sorted(gen.rng.sample(range(1, total), min(total - 1, gen.rng.randint(1, 4))))
        results = [run_one(s, ops, closing, keys, opaque, cuts) for s in sides]
        if history is not None:
            history.append((nbatch + 1, ops, closing, results))
        opaque += len(ops) + 1
        done += len(ops) + (closing is not None)
        nbatch += 1
        if results[0] != results[1]:
            diffs.append((seed, nbatch, ops, closing, results[0], results[1]))
            # start again from the same state on both sides
            for s in sides:
                s.connect()
                s.conn.call(request("flush"))
                s.cas_index.clear()
                s.last_cas.clear()
        elif closing is not None or results[0][-1:] in ([b"EOF"], [b"TIMEOUT"]):
            for s in sides:
                s.connect()
        if len(diffs) >= 5:
            break
    for s in sides:
        s.close()
    return done, diffs


def describe(diffs):
    out = []
    for seed, nbatch, ops, closing, ref, cand in diffs:
        out.append(f"seed {seed} batch {nbatch}: {ops} closing={closing}")
        for i in range(max(len(ref), len(cand))):
            a = ref[i] if i < len(ref) else None
            b = cand[i] if i < len(cand) else None
            if a != b:
                out.append(f"  reply {i}: memcached {a[:80] if a else a!r}\n"
                           f"           candidate {b[:80] if b else b!r}")
                break
    return "\n".join(out)


def test_binary_differential(pair):
    ref, cand = pair
    total = 0
    all_diffs = []
    for run in range(RUNS):
        done, diffs = run_stream(ref.addr, cand.addr, SEED + run, TOTAL_OPS // RUNS)
        total += done
        all_diffs += diffs
    assert not all_diffs, describe(all_diffs)
    assert total >= TOTAL_OPS
