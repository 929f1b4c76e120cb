"""TLS (-Z), against memcached 1.6.18 -Z and both mpcache engines.

Certificates are made at test time with the openssl CLI (tests/support/certs.py):
a CA the clients trust, server and client certificates it signed, and an
untrusted CA with its own.  Every test that takes `backend` runs against
memcached first, so what it expects is what memcached does; the tests marked
mpcache_only pin what memcached does not have (a handshake timeout, the cap on
handshakes per turn) or cannot be measured the same way (memory).
"""

import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import pytest
from pymemcache.client.base import Client

from tests.support.certs import SUITE_TLS
from tests.support.raw import RawConn
from tests.support.servers import BACKENDS, HOST, ROOT, free_port
from tests.support.tls import (OPENSSL, TLSRawConn, TLSServerProcess, client_context, make_certs,
                               tls_flags, tls_stats)

pytestmark = [
    pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI makes the certificates"),
    # it starts its own TLS servers, with plaintext beside them
    pytest.mark.skipif(SUITE_TLS, reason="not under MPCACHE_TEST_TLS=1"),
]


def _engine_has_tls():
    try:
        from mpcache import _engine
    except ImportError:
        return False
    return _engine.tls_built()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def tls_factory(backend, certs):
    """start(crt=, key=, options=(), plain=False, **ServerProcess fields)."""
    if BACKENDS[backend].is_mpcache and not _engine_has_tls():
        pytest.skip("mpcache built without OpenSSL")
    started = []

    def start(crt=None, key=None, options=(), plain=False, context=None, **kw):
        srv = TLSServerProcess(BACKENDS[backend], context=context or client_context(certs),
                               plain=plain,
                               tls_extra=tls_flags(crt or certs.server_crt, key or certs.server_key,
                                                   *options), **kw)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def tls_server(tls_factory):
    return tls_factory(plain=True)


def client(srv, context=None, **kw):
    return Client(srv.addr, tls_context=context or srv.context, timeout=10, connect_timeout=10,
                  **kw)


def read_until_closed(sock, timeout=10.0):
    """What arrives until the peer closes (a reset counts as a close);
    None if it stays open past timeout."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, ssl.SSLError):
            return buf
        if not chunk:
            return buf
        buf += chunk
    return None


def client_hello(certs):
    """The bytes of a TLS ClientHello, made by Python's ssl over memory BIOs."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(certs).wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


class ManualTLS:
    """A TLS client over a plain socket, with its records in our hands: the
    handshake runs over memory BIOs, and sealed bytes can be sent whole,
    cut, or not at all."""

    def __init__(self, addr, context, timeout=10.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # a small receive buffer makes "does not read" bite early
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=addr[0])
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake")
                self.incoming.write(data)
        self.sock.sendall(self.outgoing.read())

    def seal(self, data):
        self.obj.write(data)
        return self.outgoing.read()

    def reset(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send_until_blocked(self, plaintext, seconds):
        """Sends plaintext sealed over and over, never reading, for up to
        `seconds`, stopping once the server has stopped taking it for a
        while.  Returns the bytes sent."""
        self.sock.setblocking(False)
        pending, sent = b"", 0
        deadline = time.monotonic() + seconds
        stalled_since = None
        while time.monotonic() < deadline:
            if not pending:
                pending = self.seal(plaintext)
            _, w, _ = select.select([], [self.sock], [], 0.2)
            if not w:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break
                continue
            stalled_since = None
            try:
                n = self.sock.send(pending)
            except BlockingIOError:
                continue
            pending = pending[n:]
            sent += n
        return sent


def stat_int(srv, name, group=b""):
    return int(tls_stats(srv.addr, srv.context, group)[name])


def wait_for(cond, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ---- serving over TLS ----

def test_pymemcache_keys_big_values_multiget(tls_server):
    c = client(tls_server)
    values = {f"key{i}": (b"%d:" % i) * (1 + i % 50) for i in range(400)}
    assert c.set_many(values) == []
    for i in range(0, 400, 7):
        assert c.get(f"key{i}") == values[f"key{i}"]
    got = c.get_many(list(values))
    assert got == values
    big = os.urandom(300 * 1024)
    assert c.set("big", big)
    assert c.get("big") == big
    # a multi-get whose reply is many records, values by reference among them
    bigs = {f"big{i}": os.urandom(20000 + i * 7000) for i in range(30)}
    c.set_many(bigs)
    assert c.get_many(list(bigs)) == bigs
    c.close()


def test_pipelining_in_one_write(tls_server):
    reqs = b"".join(b"set p%d 0 0 %d\r\n%s\r\n" % (i, len(b"v%d" % i), b"v%d" % i)
                    for i in range(300))
    reqs += b"".join(b"get p%d\r\n" % i for i in range(300))
    expect = b"STORED\r\n" * 300 + b"".join(
        b"VALUE p%d 0 %d\r\nv%d\r\nEND\r\n" % (i, len(b"v%d" % i), i) for i in range(300))
    with TLSRawConn(tls_server.addr, tls_server.context) as c:
        assert c.call(reqs, timeout=20) == expect
        # the same, cut into many small records
        assert c.call(reqs, pieces=range(0, len(reqs), 97), timeout=20) == expect


def test_pipelined_big_replies_past_the_output_mark(tls_server):
    """20 MB of replies to one write of gets: the connection stops at the
    output mark and goes on as records leave, many times over."""
    values = {f"v{i}": os.urandom(5000 + i * 1500) for i in range(8)}
    c = client(tls_server)
    for k, v in values.items():
        assert c.set(k, v, noreply=False)
    c.close()
    keys = [f"v{i % 8}" for i in range(1500)]
    reqs = b"".join(b"get %s\r\n" % k.encode() for k in keys)
    expect = b"".join(b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k.encode(), len(values[k]), values[k])
                      for k in keys)
    with TLSRawConn(tls_server.addr, tls_server.context, timeout=30) as conn:
        assert conn.call(reqs, timeout=60) == expect


def test_many_connections(tls_server):
    errors = []

    def worker(n):
        try:
            c = client(tls_server)
            for j in range(20):
                key = f"c{n}_{j}"
                c.set(key, key.encode() * 10)
                assert c.get(key) == key.encode() * 10
            c.close()
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(120)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert stat_int(tls_server, "ssl_handshake_errors") == 0


def test_plaintext_listener_beside_tls(tls_server):
    with RawConn(tls_server.plain_addr) as c:
        assert c.call(b"set x 0 0 1\r\ny\r\n") == b"STORED\r\n"
    with TLSRawConn(tls_server.addr, tls_server.context) as c:
        assert c.call(b"get x\r\n") == b"VALUE x 0 1\r\ny\r\nEND\r\n"


def test_openssl_s_client(tls_server, certs):
    r = subprocess.run([OPENSSL, "s_client", "-connect", f"{HOST}:{tls_server.port}",
                        "-CAfile", certs.ca, "-verify_return_error", "-quiet"],
                       input=b"set s 0 0 2\r\nok\r\nget s\r\nquit\r\n",
                       capture_output=True, timeout=20)
    assert b"STORED\r\nVALUE s 0 2\r\nok\r\nEND\r\n" in r.stdout, r.stderr


def test_quit_sends_close_notify(tls_server):
    s = tls_server.tls_connect()
    s.sendall(b"version\r\nquit\r\n")
    buf = b""
    while True:
        chunk = s.recv(4096)   # SSLZeroReturnError would be raised without close_notify
        if not chunk:
            break
        buf += chunk
    assert buf == b"VERSION 1.6.18\r\n"
    s.close()


# ---- certificates ----

def test_untrusted_server_certificate_fails_the_handshake(tls_factory, certs):
    srv = tls_factory(crt=certs.untrusted_crt, key=certs.untrusted_key,
                      context=client_context(certs, ca=certs.untrusted_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        srv.tls_connect(context=client_context(certs))
    # the server is fine and serves those who trust it
    with TLSRawConn(srv.addr, srv.context) as c:
        assert c.call(b"version\r\n") == b"VERSION 1.6.18\r\n"


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_client_certificates(tls_factory, certs, mode):
    srv = tls_factory(options=(f"ssl_ca_cert={certs.ca}", f"ssl_verify_mode={mode}"),
                      context=client_context(certs, certs.client_crt, certs.client_key))
    with TLSRawConn(srv.addr, srv.context) as c:
        assert c.call(b"version\r\n") == b"VERSION 1.6.18\r\n"
    anonymous = client_context(certs)
    if mode == 1:
        # requested, not required
        with TLSRawConn(srv.addr, anonymous) as c:
            assert c.call(b"version\r\n") == b"VERSION 1.6.18\r\n"
    else:
        # TLS 1.3: the client learns of it at its first read
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with TLSRawConn(srv.addr, anonymous) as c:
                c.sock.sendall(b"version\r\n")
                if not c.sock.recv(100):
                    raise ConnectionError("closed")
    stranger = client_context(certs, certs.untrusted_client_crt, certs.untrusted_client_key)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with TLSRawConn(srv.addr, stranger) as c:
            c.sock.sendall(b"version\r\n")
            if not c.sock.recv(100):
                raise ConnectionError("closed")
    st = tls_stats(srv.addr, srv.context, b"settings")
    assert st["ssl_verify_mode"] == {1: "1", 2: "3", 3: "7"}[mode]
    assert st["ssl_ca_cert"] == certs.ca


def test_refresh_certs_while_clients_stay(tls_factory, certs, tmp_path):
    crt, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(certs.server_crt, crt)
    shutil.copy(certs.server_key, key)
    srv = tls_factory(crt=crt, key=key)
    staying = [client(srv) for _ in range(5)]
    for i, c in enumerate(staying):
        c.set(f"r{i}", b"before")
    first = srv.tls_connect().getpeercert()["serialNumber"]
    time.sleep(1.1)
    shutil.copy(certs.server2_crt, crt)
    shutil.copy(certs.server2_key, key)
    with TLSRawConn(srv.addr, srv.context) as c:
        assert c.call(b"refresh_certs\r\n") == b"OK\r\n"
        assert c.call(b"refresh_certs noreply\r\n") == b""
    assert stat_int(srv, "time_since_server_cert_refresh") <= 1
    second = srv.tls_connect().getpeercert()["serialNumber"]
    assert second != first
    for i, c in enumerate(staying):
        assert c.get(f"r{i}") == b"before"
        c.set(f"r{i}", b"after")
        assert c.get(f"r{i}") == b"after"
    # a key that does not match: refused with memcached's message, the
    # certificate in use stays
    shutil.copy(certs.server_crt, crt)
    with TLSRawConn(srv.addr, srv.context) as c:
        reply = c.call(b"refresh_certs noreply\r\n")
    assert reply.startswith(b"Error validating the certificate: ") or \
        reply.startswith(b"Error loading the key: "), reply
    assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1
    for c in staying:
        assert c.get("r0") == b"after"
        c.close()
    if not srv.backend.is_mpcache:
        # memcached loaded the chain into its live context before the key
        # failed: new clients get the old key with the new certificate
        with pytest.raises(ssl.SSLError):
            TLSRawConn(srv.addr, srv.context)
        return
    # mpcache loads into a new context: the one in use stays whole
    with TLSRawConn(srv.addr, srv.context) as c:
        assert c.call(b"version\r\n") == b"VERSION 1.6.18\r\n"


def test_key_is_read_before_privileges_are_dropped(tls_factory, certs):
    """A key only root may read, -u nobody: it loads at start (as root, as
    memcached loads it), and refresh_certs, which runs as nobody, says it
    cannot read it."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        import pwd
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    d = tempfile.mkdtemp(prefix="mpcache-tls-key-")
    try:
        os.chmod(d, 0o711)
        crt, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
        shutil.copy(certs.server_crt, crt)
        shutil.copy(certs.server_key, key)
        os.chmod(crt, 0o644)
        os.chmod(key, 0o600)
        srv = tls_factory(crt=crt, key=key, extra=("-u", "nobody"))
        with TLSRawConn(srv.addr, srv.context) as c:
            assert c.call(b"version\r\n") == b"VERSION 1.6.18\r\n"
            assert c.call(b"refresh_certs\r\n") == (
                b"Error loading the key: " + key.encode() +
                b" : error:8000000D:system library::Permission denied\r\n")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_refresh_certs_missing_file(tls_factory, certs, tmp_path):
    crt = str(tmp_path / "gone.crt")
    shutil.copy(certs.server_crt, crt)
    srv = tls_factory(crt=crt)
    os.unlink(crt)
    with TLSRawConn(srv.addr, srv.context) as c:
        assert c.call(b"refresh_certs\r\n") == (
            b"Error loading the certificate chain: " + crt.encode() +
            b" : error:80000002:system library::No such file or directory\r\n")


# ---- stats ----

def test_stats_lines(tls_factory, certs):
    srv = tls_factory(options=("ssl_session_cache", "ssl_wbuf_size=32", "ssl_min_version=3",
                               "ssl_ciphers=ECDHE-RSA-AES128-GCM-SHA256"), plain=True)
    st = tls_stats(srv.addr, srv.context)
    names = list(st)
    i = names.index("log_watchers")
    assert names[i + 1:i + 5] == ["ssl_new_sessions", "ssl_handshake_errors",
                                  "time_since_server_cert_refresh", "unexpected_napi_ids"]
    # memcached loads its certificates before its clock starts
    assert int(st["time_since_server_cert_refresh"]) >= 60
    settings = tls_stats(srv.addr, srv.context, b"settings")
    ssl_lines = [(k, v) for k, v in settings.items() if k.startswith("ssl_")]
    assert ssl_lines == [
        ("ssl_enabled", "yes"), ("ssl_chain_cert", certs.server_crt),
        ("ssl_key", certs.server_key), ("ssl_verify_mode", "0"), ("ssl_keyformat", "1"),
        ("ssl_ciphers", "ECDHE-RSA-AES128-GCM-SHA256"), ("ssl_ca_cert", "NULL"),
        ("ssl_wbuf_size", "32768"), ("ssl_session_cache", "yes"), ("ssl_kernel_tls", "no"),
        ("ssl_min_version", "tlsv1.3")]
    assert settings["inter"] == f"{HOST},notls:{HOST}:{srv.plain_port}"


def test_no_session_cache_no_new_sessions_line(tls_server):
    st = tls_stats(tls_server.addr, tls_server.context)
    assert "ssl_new_sessions" not in st
    assert st["ssl_handshake_errors"] == "0"


def test_session_cache_resumes_and_counts(tls_factory, certs):
    """Sessions resume over TLS 1.3 (tickets) and 1.2 (the server's cache),
    and ssl_new_sessions counts what memcached counts."""
    srv = tls_factory(options=("ssl_session_cache",))
    tls12 = client_context(certs)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    reused = []
    for ctx in (client_context(certs), tls12):
        session = None
        for _ in range(3):
            raw = socket.create_connection(srv.addr, timeout=10)
            s = ctx.wrap_socket(raw, server_hostname=HOST, session=session)
            s.sendall(b"version\r\n")
            assert s.recv(100) == b"VERSION 1.6.18\r\n"
            reused.append(s.session_reused)
            session = s.session
            s.close()
    assert reused == [False, True, True, False, True, True]
    # six sessions' worth of tickets and cache entries, and the stats
    # connection's own
    assert tls_stats(srv.addr, srv.context)["ssl_new_sessions"] == "8"


def test_min_version_refuses_older_clients(tls_factory, certs):
    srv = tls_factory(options=("ssl_min_version=3",))
    old = client_context(certs)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        srv.tls_connect(context=old)


@pytest.mark.mpcache_only
def test_kernel_tls_falls_back_quietly(tls_factory, certs):
    srv = tls_factory(options=("ssl_kernel_tls",))
    c = client(srv)
    big = os.urandom(100000)
    c.set("k", big)
    assert c.get("k") == big
    features = tls_stats(srv.addr, srv.context, b"channels")["features"]
    with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
        has_tls_ulp = "tls" in f.read().split()
    assert ",tls," in features + ","
    assert ("ktls_available_not_used" if has_tls_ulp else "ktls_unavailable") in features
    assert tls_stats(srv.addr, srv.context, b"settings")["ssl_kernel_tls"] == "yes"


# ---- hostile input ----

def test_plaintext_to_a_tls_port_is_not_served(tls_server):
    s = socket.create_connection(tls_server.addr, timeout=10)
    s.sendall(b"set a 0 0 1\r\nb\r\nversion\r\n")
    got = read_until_closed(s)
    s.close()
    assert got is not None, "the connection stayed open"
    assert b"VERSION" not in got and b"STORED" not in got and b"ERROR" not in got


@pytest.mark.parametrize("garbage", [b"\x00" * 64, os.urandom(4096),
                                     b"\x16\x03\x01\xff\xff" + b"A" * 200,
                                     b"\x17\x03\x03\x00\x10" + b"B" * 16])
def test_garbage_instead_of_client_hello(tls_server, garbage):
    s = socket.create_connection(tls_server.addr, timeout=10)
    s.sendall(garbage)
    try:
        got = read_until_closed(s)
    finally:
        s.close()
    # an alert at most, never a reply
    assert got is not None and b"VERSION" not in got and b"ERROR" not in got
    with TLSRawConn(tls_server.addr, tls_server.context) as c:
        assert c.call(b"version\r\n") == b"VERSION 1.6.18\r\n"


def test_reset_mid_record(tls_server):
    m = ManualTLS(tls_server.addr, tls_server.context)
    records = m.seal(b"set r 0 0 100000\r\n" + b"z" * 100000 + b"\r\n")
    m.sock.sendall(records[:len(records) // 2 + 3])
    time.sleep(0.1)
    m.reset()
    with TLSRawConn(tls_server.addr, tls_server.context) as c:
        assert c.call(b"get r\r\nversion\r\n") == b"END\r\nVERSION 1.6.18\r\n"


def test_requests_before_close_notify_are_answered(tls_server):
    m = ManualTLS(tls_server.addr, tls_server.context)
    records = m.seal(b"set cn 0 0 2\r\nok\r\n")
    with pytest.raises(ssl.SSLWantReadError):
        m.obj.unwrap()   # queues the close_notify
    m.sock.sendall(records + m.outgoing.read())
    assert read_until_closed(m.sock) is not None
    m.sock.close()
    with TLSRawConn(tls_server.addr, tls_server.context) as c:
        assert c.call(b"get cn\r\n") == b"VALUE cn 0 2\r\nok\r\nEND\r\n"


def test_corrupt_record_closes(tls_server):
    m = ManualTLS(tls_server.addr, tls_server.context)
    rec = bytearray(m.seal(b"version\r\n"))
    rec[-3] ^= 0xff
    m.sock.sendall(bytes(rec))
    assert read_until_closed(m.sock) is not None
    m.sock.close()


@pytest.mark.mpcache_only
def test_stalled_handshakes_are_closed(tls_server, certs):
    before = stat_int(tls_server, "ssl_handshake_errors")
    silent = socket.create_connection(tls_server.addr, timeout=15)
    hello = socket.create_connection(tls_server.addr, timeout=15)
    hello.sendall(client_hello(certs))
    t0 = time.monotonic()
    assert read_until_closed(silent, 15) is not None
    got = read_until_closed(hello, 15)
    took = time.monotonic() - t0
    silent.close()
    hello.close()
    assert got is not None and got[:1] == b"\x16"   # its ServerHello, then the close
    assert 4 <= took <= 12, took
    assert stat_int(tls_server, "ssl_handshake_errors") == before + 2


@pytest.mark.mpcache_only
def test_half_open_handshakes_do_not_delay_established_clients(tls_factory, certs):
    srv = tls_factory(threads=1)
    c = client(srv)
    c.set("steady", b"x" * 100)
    hello = client_hello(certs)
    socks = []
    latencies = []
    stop = threading.Event()

    def steady():
        while not stop.is_set():
            t = time.monotonic()
            assert c.get("steady") == b"x" * 100
            latencies.append(time.monotonic() - t)

    th = threading.Thread(target=steady)
    th.start()
    time.sleep(0.2)
    for _ in range(300):
        s = socket.create_connection(srv.addr, timeout=15)
        s.sendall(hello)
        socks.append(s)
    # every half-open client got its ServerHello (the server did the work)
    for s in socks:
        s.settimeout(15)
        assert s.recv(1)[:1] == b"\x16"
    time.sleep(0.2)
    stop.set()
    th.join(10)
    for s in socks:
        s.close()
    assert latencies and max(latencies) < 0.5, sorted(latencies)[-5:]


@pytest.mark.mpcache_only
def test_memory_stays_bounded_over_tls_churn(tls_factory):
    srv = tls_factory(threads=1)
    value = os.urandom(150 * 1024)
    first = client(srv)
    assert first.set("v", value, noreply=False)
    first.close()

    def rss():
        with open(f"/proc/{srv.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024

    def round_():
        conns = [client(srv) for _ in range(100)]
        for c in conns:
            assert c.get("v") == value
        for c in conns:
            c.close()

    round_()
    base = rss()
    for _ in range(3):
        round_()
    assert wait_for(lambda: stat_int(srv, "curr_connections") <= 2)
    assert rss() - base < 24 * 1024 * 1024, (base, rss())


# ---- flow control over TLS ----

MB = 1024 * 1024


def rss(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024


@pytest.mark.mpcache_only
def test_unread_multigets_over_tls_memory_is_bounded(tls_factory):
    """20 TLS clients each ask for 100 x 500 KB and never read: the server
    holds about one output mark of records per client, and serves others."""
    srv = tls_factory(memory_mb=64)
    value = os.urandom(500 * 1000)
    first = client(srv)
    assert first.set("bigv", value, noreply=False)
    first.close()
    base_rss, base_conns = rss(srv), stat_int(srv, "curr_connections")
    request = b"get" + b" bigv" * 100 + b"\r\n"
    readers = []
    for _ in range(20):
        m = ManualTLS(srv.addr, srv.context, rcvbuf=64 * 1024)
        m.sock.sendall(m.seal(request))
        readers.append(m)
    time.sleep(2.0)
    grown = rss(srv) - base_rss
    t0 = time.monotonic()
    with TLSRawConn(srv.addr, srv.context) as c:
        assert c.call(b"version\r\n") == b"VERSION 1.6.18\r\n"
    waited = time.monotonic() - t0
    for m in readers:
        m.reset()
    assert wait_for(lambda: stat_int(srv, "curr_connections") <= base_conns)
    assert grown <= 64 * MB, f"RSS grew {grown / MB:.0f} MB"
    assert waited < 1.0
    assert client(srv).get("bigv") == value


@pytest.mark.mpcache_only
def test_unread_pipelined_gets_over_tls_push_back(tls_factory):
    """8 TLS clients pipeline `get big` (100 KB values) without reading: the
    server stops taking their records instead of decrypting and buffering
    them."""
    srv = tls_factory(memory_mb=64)
    first = client(srv)
    assert first.set("big", os.urandom(100 * 1000), noreply=False)
    first.close()
    base_rss, base_conns = rss(srv), stat_int(srv, "curr_connections")
    base_read = stat_int(srv, "bytes_read")
    chunk = b"get big\r\n" * 7000
    senders = [ManualTLS(srv.addr, srv.context, rcvbuf=64 * 1024) for _ in range(8)]
    sent = 0
    deadline = time.monotonic() + 15
    for m in senders:
        sent += m.send_until_blocked(chunk, max(0.5, min(5.0, deadline - time.monotonic())))
    grown = rss(srv) - base_rss
    taken = stat_int(srv, "bytes_read") - base_read
    for m in senders:
        m.reset()
    assert wait_for(lambda: stat_int(srv, "curr_connections") <= base_conns)
    assert grown <= 64 * MB, f"RSS grew {grown / MB:.0f} MB"
    # records included, what the server took is bounded by its own buffers
    assert taken <= 8 * 4 * MB, f"took {taken / MB:.0f} MB of {sent / MB:.0f} MB sent"


# ---- start-up ----

def _start_up(backend_argv, args, certs):
    port = free_port()
    cmd = list(backend_argv) + ["-p", str(port), "-l", HOST, "-U", "0"] + list(args)
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=10, env=env, cwd=certs.dir)
    except subprocess.TimeoutExpired:
        return None, ""
    return r.returncode, r.stderr.decode()


@pytest.mark.parametrize("what,args", [
    ("no certificate", ["-Z"]),
    ("missing certificate", ["-Z", "-o", "ssl_chain_cert=/nonexistent.pem"]),
    ("missing key", ["-Z", "-o", "ssl_chain_cert=server.crt"]),
    ("key of another", ["-Z", "-o", "ssl_chain_cert=server.crt,ssl_key=client.key"]),
    ("missing CA file", ["-Z", "-o", "ssl_chain_cert=server.crt,ssl_key=server.key,"
                         "ssl_ca_cert=/nonexistent.pem"]),
    ("bad ciphers", ["-Z", "-o", "ssl_chain_cert=server.crt,ssl_key=server.key,ssl_ciphers=BOGUS"]),
    ("no TCP port", ["-Z", "-p", "0", "-o", "ssl_chain_cert=server.crt,ssl_key=server.key"]),
    ("bad verify mode", ["-o", "ssl_verify_mode=4"]),
    ("verify mode not a number", ["-o", "ssl_verify_mode=x"]),
    ("bad min version", ["-o", "ssl_min_version=9"]),
    ("wbuf size not a number", ["-o", "ssl_wbuf_size=-1"]),
    ("missing argument", ["-o", "ssl_key"]),
    ("notls without -Z", ["-l", "notls:127.0.0.1:1"]),
])
def test_start_up_refusals_match_memcached(certs, what, args):
    if not _engine_has_tls():
        pytest.skip("mpcache built without OpenSSL")
    mc_code, mc_err = _start_up(("memcached",), args, certs)
    mp_code, mp_err = _start_up(BACKENDS["mpcache-epoll"].argv, args, certs)
    assert mc_code is not None and mc_code != 0, mc_err
    assert mp_code == mc_code, (mp_err, mc_err)
    # memcached prints OpenSSL's error queue too (thread ids, source lines),
    # before its own message: mpcache prints its message only
    mc_lines = [line.strip() for line in mc_err.strip().splitlines()
                if not re.match(r"[0-9A-F]+:error:", line)]
    assert [line.strip() for line in mp_err.strip().splitlines()] == mc_lines, (mp_err, mc_err)


def test_unix_socket_stays_plaintext_under_z(certs, tmp_path):
    if not _engine_has_tls():
        pytest.skip("mpcache built without OpenSSL")
    path = str(tmp_path / "mc.sock")
    cmd = list(BACKENDS["mpcache-epoll"].argv) + ["-s", path] + list(
        tls_flags(certs.server_crt, certs.server_key))
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(path))
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        assert wait_for(lambda: s.connect_ex(path) == 0)
        s.sendall(b"version\r\n")
        assert s.recv(100) == b"VERSION 1.6.18\r\n"
        s.close()
    finally:
        proc.terminate()
        proc.wait(10)


# ---- the embedded API and the command line ----

def test_embedded_server_over_tls(certs):
    if not _engine_has_tls():
        pytest.skip("mpcache built without OpenSSL")
    import mpcache
    with mpcache.Server(port=0, ssl_enabled=True, ssl_chain_cert=certs.server_crt,
                        ssl_key=certs.server_key, listen=["127.0.0.1"]) as srv:
        c = Client(srv.address, tls_context=client_context(certs), timeout=10)
        assert c.set("e", b"mbedded", noreply=False)
        assert c.get("e") == b"mbedded"
        c.close()
        assert srv.stats()["ssl_handshake_errors"] == 0
    with pytest.raises(mpcache.ConfigError, match="Error loading the key: "):
        mpcache.Server(port=0, ssl_enabled=True, ssl_chain_cert=certs.server_crt,
                       ssl_key=certs.client_key)


@pytest.mark.parametrize("option,field,value", [
    ("ssl_wbuf_size=32", "ssl_wbuf_size", 32768),
    ("ssl_verify_mode=2", "ssl_verify_mode", 2),
    ("ssl_min_version= 3", "ssl_min_version", 3),
    ("ssl_keyformat=2", "ssl_keyformat", 2),
    ("ssl_session_cache", "ssl_session_cache", True),
    ("ssl_kernel_tls", "ssl_kernel_tls", True),
    ("ssl_ciphers=HIGH:!aNULL", "ssl_ciphers", "HIGH:!aNULL"),
    ("ssl_ca_cert=ca.pem", "ssl_ca_cert", "ca.pem"),
])
def test_ssl_options_parse_as_memcached(option, field, value):
    from mpcache.cli import parse_args
    s = parse_args(["-o", option]).settings
    assert getattr(s, field) == value
    assert not s.ssl_enabled   # -o alone does not enable TLS, as in memcached
