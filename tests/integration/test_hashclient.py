"""pymemcache's HashClient spreading keys over three servers of a backend."""

from pymemcache.client.hash import HashClient

from tests.support.raw import RawConn


def keys_held(srv, keys):
    """The keys of `keys` that srv holds, asked with one raw multi-get."""
    with RawConn(srv.addr) as c:
        reply = c.call(b"get " + b" ".join(keys) + b"\r\n")
    return {line.split(b" ")[1] for line in reply.split(b"\r\n") if line.startswith(b"VALUE ")}


def test_hashclient_spreads_and_finds_keys(servers3):
    addrs = [s.addr for s in servers3]
    for pooling in (False, True):
        hc = HashClient(addrs, use_pooling=pooling, default_noreply=False,
                        connect_timeout=5, timeout=5)
        try:
            hc.flush_all()
            values = {b"hk:%d" % i: b"v%d" % i for i in range(300)}
            assert hc.set_many(values) == []
            assert hc.get_many(list(values)) == values
            held = [keys_held(s, list(values)) for s in servers3]
            # Every key on exactly one server, and every server used.
            assert sum(len(h) for h in held) == 300
            assert set().union(*held) == set(values)
            assert all(held), [len(h) for h in held]
            assert hc.incr(b"ctr", 1) is None
            hc.set(b"ctr", b"1")
            assert hc.incr(b"ctr", 41) == 42
            value, cas = hc.gets(b"hk:1")
            assert value == b"v1"
            assert hc.cas(b"hk:1", b"new", cas) is True
            assert hc.get(b"hk:1") == b"new"
            assert hc.delete_many(list(values)) is True
            assert hc.get_many(list(values)) == {}
            assert sum(len(keys_held(s, [b"ctr"])) for s in servers3) == 1
        finally:
            hc.close()
