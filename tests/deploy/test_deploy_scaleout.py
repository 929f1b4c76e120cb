"""Beyond one machine: three real mpcache processes behind a real twemproxy
(Debian's nutcracker, ketama), and the same three under pymemcache's
HashClient.  10,000 keys go in and come back, every instance holds a share,
and stopping one instance loses its share only while clients keep working.

Which instance holds a key is asked of the instances themselves (a raw
multi-get on each), not inferred from a hash."""

import socket
import tempfile

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from tests.metrics.procs import HOST, Mpcache, Nutcracker, need

NKEYS = 10_000
BATCH = 500          # keys per multi-get / set_many
KEYS = [f"user:{i}:profile" for i in range(NKEYS)]


def value(key):
    return f"v-{key}".encode()


def batches(keys, n=BATCH):
    for i in range(0, len(keys), n):
        yield keys[i:i + n]


def keys_held(addr, keys):
    """The keys of `keys` this server holds, by raw multi-gets."""
    held = set()
    with socket.create_connection(addr, timeout=10) as s:
        for batch in batches(keys):
            s.sendall(b"get " + " ".join(batch).encode() + b"\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(1 << 20)
                assert chunk, buf[-200:]
                buf += chunk
            for line in buf.split(b"\r\n"):
                if line.startswith(b"VALUE "):
                    held.add(line.split(b" ")[1].decode())
    return held


def get_all(client, keys):
    found = {}
    for batch in batches(keys):
        found.update(client.get_many(batch))
    return {k if isinstance(k, str) else k.decode(): v for k, v in found.items()}


def set_all(client, keys):
    failed = []
    for batch in batches(keys):
        failed += client.set_many({k: value(k) for k in batch})
    return failed


@pytest.fixture
def three():
    servers = []
    try:
        for _ in range(3):
            servers.append(Mpcache(threads=1, metrics=False).start())
        yield servers
        for s in servers:
            assert s.proc.returncode in (None, 0), s.describe()
    finally:
        for s in servers:
            s.close()


def spread(servers, keys):
    held = [keys_held(s.addr, keys) for s in servers]
    # every key on exactly one instance, every instance with a fair share
    assert sum(len(h) for h in held) == len(keys)
    assert set().union(*held) == set(keys)
    for h in held:
        assert len(h) > len(keys) // 6, [len(h) for h in held]
    return held


def test_nutcracker_ketama_spreads_and_survives_a_lost_instance(three):
    need("nutcracker")
    with tempfile.TemporaryDirectory(prefix="mpcache-twem-") as workdir:
        proxy = Nutcracker([s.addr for s in three], workdir).start()
        client = Client(proxy.addr, connect_timeout=5, timeout=5, default_noreply=False)
        try:
            assert set_all(client, KEYS) == []
            assert get_all(client, KEYS) == {k: value(k) for k in KEYS}
            held = spread(three, KEYS)

            # One instance goes away.  nutcracker ejects it at the first
            # failure (server_failure_limit 1): the request that meets the
            # failure gets an error, the rest are served by the survivors.
            assert three[0].stop() == 0
            errors = 0
            for k in sorted(held[0])[:20]:
                try:
                    client.get(k)
                except Exception:
                    errors += 1
                    client.close()      # a proxy error closes pymemcache's connection
            assert errors <= 2
            survivors = held[1] | held[2]
            found = get_all(client, KEYS)
            assert set(found) == survivors
            assert all(found[k] == value(k) for k in found)
            # The lost share can be written again and lands on the survivors.
            lost = sorted(held[0])
            assert set_all(client, lost) == []
            assert get_all(client, KEYS) == {k: value(k) for k in KEYS}
            again = [keys_held(s.addr, lost) for s in three[1:]]
            assert again[0] | again[1] == set(lost) and not again[0] & again[1]
            assert proxy.alive(), proxy.describe()
        finally:
            client.close()
            proxy.close()


def test_hashclient_spreads_and_survives_a_lost_instance(three):
    hc = HashClient([s.addr for s in three], use_pooling=True, default_noreply=False,
                    connect_timeout=2, timeout=5,
                    # a server that fails once is dropped from the ring for the test
                    retry_attempts=1, retry_timeout=0, dead_timeout=60, ignore_exc=True)
    try:
        assert set_all(hc, KEYS) == []
        assert get_all(hc, KEYS) == {k: value(k) for k in KEYS}
        held = spread(three, KEYS)

        assert three[2].stop() == 0
        survivors = held[0] | held[1]
        found = get_all(hc, KEYS)
        # ignore_exc: the lost share reads as misses, nothing raises
        assert set(found) == survivors
        assert all(found[k] == value(k) for k in found)
        lost = sorted(held[2])
        assert set_all(hc, lost) == []
        assert get_all(hc, KEYS) == {k: value(k) for k in KEYS}
        again = [keys_held(s.addr, lost) for s in three[:2]]
        assert again[0] | again[1] == set(lost) and not again[0] & again[1]
    finally:
        hc.close()
