"""SASL (-S) over the binary protocol beside memcached 1.6.18 -S: PLAIN,
nothing but SASL and version before authenticating, failures, the
exchange's states, counters, and what a text client gets.

The reference reads its users from a Cyrus sasldb (Debian builds memcached
without the pwdb callback), made with saslpasswd2; mpcache reads the same
users from a "user:password" file named by MEMCACHED_SASL_PWDB, as
memcached's pwdb build does.  memcached lists only PLAIN with its
mech_list set so (Cyrus would list every plugin installed)."""

import os
import shutil
import socket
import struct
import subprocess

import pytest

from tests.integration.test_binary import exchange, same_on_both
from tests.support.binproto import BinConn, request, store_extras
from tests.support.servers import BACKENDS, ServerProcess

USERS = {b"testuser": b"testpass", b"other": b"s3cr:et"}

pytestmark = pytest.mark.skipif(shutil.which("saslpasswd2") is None,
                                reason="saslpasswd2 (sasl2-bin) makes the reference's users")


@pytest.fixture
def sasl_pair(backend, tmp_path, monkeypatch):
    conf = tmp_path / "sasl"
    conf.mkdir()
    sasldb = tmp_path / "sasldb2"
    realm = socket.gethostname()
    for user, password in USERS.items():
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", str(sasldb), "-a", "memcached",
                        "-u", realm, user.decode()], input=password, check=True)
    (conf / "memcached.conf").write_text(f"mech_list: plain\nsasldb_path: {sasldb}\n")
    pwdb = tmp_path / "pwdb"
    pwdb.write_bytes(b"".join(u + b":" + p + b"\n" for u, p in USERS.items()))
    monkeypatch.setenv("SASL_CONF_PATH", str(conf))
    monkeypatch.setenv("MEMCACHED_SASL_PWDB", str(pwdb))
    started = []

    def start(name, extra=("-S",)):
        srv = ServerProcess(BACKENDS[name], extra=extra)
        started.append(srv)
        return srv.start()

    yield start("memcached"), start(backend), pwdb
    for srv in started:
        srv.stop()


def plain(user, password, authzid=b""):
    return authzid + b"\0" + user + b"\0" + password


def auth(data, mech=b"PLAIN", opaque=1):
    return request("sasl_auth", mech, b"", data, opaque=opaque)


GOOD = auth(plain(b"testuser", b"testpass"))
SET = request("set", b"a", store_extras(3, 0), b"value", opaque=2)
GET = request("getk", b"a", opaque=3)

CASES = {
    "list": request("sasl_list"),
    "version_before_auth": request("version"),
    "get_before_auth_closes": GET,
    "noop_before_auth_closes": request("noop"),
    "quiet_before_auth_closes": request("getq", b"a"),
    "stat_before_auth_closes": request("stat"),
    "auth_then_commands": GOOD + SET + GET,
    "second_user": auth(plain(b"other", b"s3cr:et")) + request("noop"),
    "authzid_same": auth(plain(b"testuser", b"testpass", b"testuser")) + GET,
    "authzid_other": auth(plain(b"testuser", b"testpass", b"other")) + GET,
    "wrong_password_stays_open": auth(plain(b"testuser", b"nope")) + request("version"),
    "wrong_password_then_get": auth(plain(b"testuser", b"nope")) + GET,
    "unknown_user": auth(plain(b"nobody", b"testpass")),
    "password_prefix": auth(plain(b"testuser", b"testpas")),
    "password_longer": auth(plain(b"testuser", b"testpassX")),
    "one_nul": auth(b"testuser\0testpass"),
    "no_nul": auth(b"testusertestpass"),
    "three_nuls": auth(plain(b"testuser", b"testpass") + b"\0"),
    "empty_then_step": auth(b"") + request("sasl_step", b"PLAIN", b"", plain(b"testuser", b"testpass"))
                       + GET,
    "empty_then_bad_step": auth(b"") + request("sasl_step", b"PLAIN", b"", b"junk") + GET,
    "step_without_auth": request("sasl_step", b"PLAIN", b"", plain(b"testuser", b"testpass")),
    "step_after_success": GOOD + request("sasl_step", b"PLAIN", b"", b"x") + GET,
    "failed_reauth_forgets": GOOD + auth(plain(b"testuser", b"bad")) + GET,
    "list_forgets": GOOD + request("sasl_list") + GET,
    "mech_lower_case": auth(plain(b"testuser", b"testpass"), mech=b"plain") + GET,
    "unknown_mech": auth(plain(b"testuser", b"testpass"), mech=b"CRAM-MD6"),
    "long_mech_swallows": auth(b"abc", mech=b"P" * 33) + request("version"),
    "list_with_key": request("sasl_list", b"k"),
    "auth_without_mech": request("sasl_auth", b"", b"", b"x"),
    "auth_in_pieces": GOOD + SET + GET,
    "bad_lengths_before_auth": request("get", b"abcd", keylen=4, bodylen=3),
    "long_key_before_auth": request("get", b"x" * 251),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sasl_case(sasl_pair, name):
    ref, cand, _ = sasl_pair
    data = CASES[name]
    pieces = list(range(1, len(data), 7)) if name == "auth_in_pieces" else None
    same_on_both(ref, cand, data, pieces=pieces, pause=0.001)


def test_text_client_is_read_as_binary(sasl_pair):
    """-S binds the binary protocol: a text line waits for a whole header,
    then its bad magic closes the connection unanswered."""
    ref, cand, _ = sasl_pair
    same_on_both(ref, cand, b"version\r\n" + bytes(15), to_eof=True)


def stat_values(srv, names):
    with BinConn(srv.addr) as c:
        c.call(GOOD)
        packets = c.call(request("stat"))
        settings = c.call(request("stat", b"settings"))
    found = {p.key: p.value for p in packets + settings if p.key}
    return {n: found[n] for n in names}


def test_counters_and_settings(sasl_pair):
    ref, cand, _ = sasl_pair
    for srv in (ref, cand):
        exchange(srv.addr, GOOD + auth(plain(b"testuser", b"x")) + auth(b"") +
                 request("sasl_step", b"PLAIN", b"", b"\0\0"))
    names = [b"auth_cmds", b"auth_errors", b"auth_enabled_sasl", b"binding_protocol"]
    want = stat_values(ref, names)
    assert want[b"auth_enabled_sasl"] == b"yes" and want[b"binding_protocol"] == b"binary"
    assert stat_values(cand, names) == want


@pytest.mark.mpcache_only
def test_password_file_read_at_each_authentication(sasl_pair):
    """memcached's pwdb build reads the file at every authentication: a
    user added or removed counts from the next one."""
    _, cand, pwdb = sasl_pair
    newcomer = auth(plain(b"newcomer", b"pw")) + request("noop")
    with BinConn(cand.addr) as c:
        (p,) = c.call(auth(plain(b"newcomer", b"pw")))
        assert p.status == 0x20
    pwdb.write_bytes(pwdb.read_bytes() + b"newcomer:pw\r\n")
    raw, _ = exchange(cand.addr, newcomer)
    assert raw[6:8] == b"\0\0" and raw.endswith(b"Authenticated" + bytes([0x81, 0x0a]) + bytes(22))
    os.unlink(pwdb)
    with BinConn(cand.addr) as c:
        (p,) = c.call(GOOD)
        assert (p.status, p.value) == (0x20, b"Auth failure.")


@pytest.mark.mpcache_only
def test_no_password_file(backend, monkeypatch):
    """Without MEMCACHED_SASL_PWDB no user authenticates; SASL is still
    required."""
    monkeypatch.delenv("MEMCACHED_SASL_PWDB", raising=False)
    srv = ServerProcess(BACKENDS[backend], extra=("-S",)).start()
    try:
        with BinConn(srv.addr) as c:
            c.send(GOOD + GET)
            packets, ending = c.read_until(lambda p: False, timeout=3)
        assert [(p.opcode, p.status, p.value) for p in packets] == [
            (0x21, 0x20, b"Auth failure."), (0x0c, 0x20, b"Auth failure.")]
        assert ending == "EOF"
    finally:
        srv.stop()
