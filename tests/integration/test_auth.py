"""ASCII authentication (-Y <file>), memcached 1.6.18's: every test runs
against memcached started with the same file and flags, so an expectation
here is what memcached itself answers, byte for byte.

What memcached does, and these tests pin:
  - before authenticating, a line is only looked at for
    "set <key> <flags> <exptime> <bytes>"; anything else is answered
    CLIENT_ERROR unauthenticated, and the connection stays open;
  - that set's data block is "<user> <password>": STORED authenticates the
    connection (nothing is stored; noreply is not honoured), a wrong pair is
    CLIENT_ERROR authentication failure, other blocks other errors;
  - the replies before authentication share one response object per batch:
    of a pipeline only the last reply arrives (one more each time memcached
    yields after -R requests);
  - its read buffer stays at 16 KiB: a "password" longer than that is never
    answered, and the connection is closed once more arrives; a line without
    a newline past 2048 bytes closes it too;
  - auth_cmds and auth_errors in "stats", the file in "stats settings";
  - a file that cannot be read or is malformed refuses to start, with
    memcached's message and exit status; SIGHUP reads it again.
"""

import os
import pwd
import signal
import socket
import subprocess
import sys
import time

import pytest
from pymemcache.client.base import Client

from tests.support.servers import BACKENDS, HOST, ROOT, free_port

AUTH_FILE = b"alice:secret\nbob:hunter2\n"
OK = b"set auth 0 0 12\r\nalice secret\r\n"
UNAUTH = b"CLIENT_ERROR unauthenticated\r\n"
FAILURE = b"CLIENT_ERROR authentication failure\r\n"
CLOSED = "closed"
OPEN = "open"


class Conn:
    """A raw connection that tells a reply from silence and from a close
    (a reset counts as a close: memcached closes with input unread)."""

    def __init__(self, addr, family=socket.AF_INET, timeout=5.0):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.closed = False

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True   # the server closed while we were sending
        except TimeoutError:
            pass                 # it stopped reading: what it answered tells

    def read(self, at_least=0, quiet=0.1):
        """What arrives until at_least bytes are in and then nothing more for
        `quiet` seconds, or until the server closes."""
        buf = b""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(quiet if len(buf) >= at_least else deadline - time.monotonic())
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                if len(buf) >= at_least:
                    break
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            buf += chunk
        return buf

    def exchange(self, data, want_len=0, quiet=0.1):
        """(reply, "open" or "closed") for data."""
        self.send(data)
        got = self.read(want_len, quiet)
        return got, CLOSED if self.closed else OPEN

    def expect(self, data, want, state=OPEN):
        assert self.exchange(data, len(want)) == (want, state)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def auth_file(tmp_path, content=AUTH_FILE, name="auth"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.fixture(scope="session")
def shared_auth_file(tmp_path_factory):
    return auth_file(tmp_path_factory.mktemp("auth"))


@pytest.fixture
def authed_server(server_pool, backend, shared_auth_file):
    """A server of the test's backend with -Y and AUTH_FILE, shared by the
    tests that leave it as they found it (nothing stored, file unchanged)."""
    srv = server_pool.get(backend, extra=("-Y", shared_auth_file))
    with Conn(srv.addr) as c:
        c.expect(OK + b"flush_all\r\n", b"STORED\r\nOK\r\n")
    yield srv
    assert srv.alive(), srv.output()


@pytest.fixture
def fresh_authed_server(server_factory, tmp_path):
    """A server of its own, for counters and for changing its file."""
    path = auth_file(tmp_path)
    srv = server_factory(extra=("-Y", path))
    srv.auth_path = path
    return srv


def stats(conn, group=b""):
    """An authenticated connection's "stats [group]" as a dict."""
    reply, _ = conn.exchange(b"stats" + (b" " + group if group else b"") + b"\r\n", 5)
    while not reply.endswith(b"END\r\n"):
        more = conn.read(1)
        assert more, reply
        reply += more
    out = {}
    for line in reply.decode().split("\r\n"):
        if line.startswith("STAT "):
            _, name, value = line.split(" ", 2)
            out[name] = value
    return out


# ---- before authentication ----

REFUSED = [
    b"get a\r\n", b"gets a b\r\n", b"version\r\n", b"stats\r\n", b"stats settings\r\n",
    b"flush_all\r\n", b"delete a\r\n", b"incr a 1\r\n", b"touch a 10\r\n",
    b"verbosity 1\r\n", b"shutdown\r\n", b"quit\r\n", b"mn\r\n", b"mg a v\r\n",
    b"ms a 12\r\n", b"md a\r\n", b"ma a\r\n", b"add a 0 0 12\r\n", b"cas a 0 0 12 1\r\n",
    b"set a 0 0\r\n", b"set a 0 0 -1\r\n", b"set a 0 0 x\r\n", b"SET a 0 0 12\r\n",
    b"GET / HTTP/1.1\r\n", b"\r\n", b"bogus\r\n",
]


def test_every_command_refused_before_auth(authed_server):
    for request in REFUSED:
        with Conn(authed_server.addr) as c:
            assert c.exchange(request, len(UNAUTH)) == (UNAUTH, OPEN), request
    # nothing above reached the store
    with Conn(authed_server.addr) as c:
        c.expect(OK + b"get a\r\n", b"STORED\r\nEND\r\n")


def test_authentication_is_per_connection(authed_server):
    with Conn(authed_server.addr) as a, Conn(authed_server.addr) as b:
        a.expect(OK, b"STORED\r\n")
        b.expect(b"get k\r\n", UNAUTH)
        a.expect(b"set k 0 0 1\r\nv\r\nget k\r\n", b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n")
        b.expect(b"get k\r\n", UNAUTH)
    with Conn(authed_server.addr) as c:
        c.expect(b"get k\r\n", UNAUTH)


# ---- credentials ----

def test_credentials_then_normal_use(authed_server):
    with Conn(authed_server.addr) as c:
        # the key, flags and exptime are not read; noreply is not honoured
        c.expect(b"set whatever 7 100 11 noreply\r\nbob hunter2\r\n", b"STORED\r\n")
        c.expect(b"get whatever\r\nset k 3 0 2\r\nab\r\nget k\r\nversion\r\n",
                 b"END\r\nSTORED\r\nVALUE k 3 2\r\nab\r\nEND\r\nVERSION 1.6.18\r\n")
        # authenticated, a set is a set: credentials are a value like another
        c.expect(OK + b"get auth\r\n",
                 b"STORED\r\nVALUE auth 0 12\r\nalice secret\r\nEND\r\n")


def test_pymemcache_authenticates_with_a_set(authed_server):
    client = Client(authed_server.addr, connect_timeout=5, timeout=5)
    try:
        # noreply=False: memcached answers the credentials even when told not to
        assert client.set("any-key", "alice secret", noreply=False) is True
        assert client.set("greeting", "hello", noreply=False) is True
        assert client.get("greeting") == b"hello"
        assert client.get("any-key") is None
        assert client.incr("n", 1) is None
        client.set("n", "41")
        assert client.incr("n", 1) == 42
    finally:
        client.close()


def test_pymemcache_unauthenticated(authed_server):
    client = Client(authed_server.addr, connect_timeout=5, timeout=5)
    try:
        with pytest.raises(Exception, match="unauthenticated"):
            client.get("greeting")
    finally:
        client.close()


@pytest.mark.parametrize("block, reply", [
    (b"alice wrong", FAILURE),
    (b"mallory secret", FAILURE),
    (b"bob secret", FAILURE),
    (b"alice secret2", FAILURE),
    (b"alice secre", FAILURE),
    (b"Alice secret", FAILURE),
    (b"alice secret\r", FAILURE),
    (b"alice", b"CLIENT_ERROR bad authentication token format\r\n"),
    (b"alice\tsecret", b"CLIENT_ERROR bad authentication token format\r\n"),
    (b"", b"CLIENT_ERROR bad authentication token format\r\n"),
    (b"\0alice secret", b"CLIENT_ERROR bad authentication token format\r\n"),
    (b"alice se\0cret", FAILURE),
    (b"alice secret\0junk", b"STORED\r\n"),
    (b"  alice   secret  more words", b"STORED\r\n"),
], ids=lambda v: repr(v))
def test_credentials_block(authed_server, block, reply):
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 %d\r\n%s\r\n" % (len(block), block), reply)
        # a failure leaves the connection unauthenticated, and it may retry
        after = b"END\r\n" if reply == b"STORED\r\n" else UNAUTH
        c.expect(b"get a\r\n", after)
        c.expect(OK + b"get a\r\n", b"STORED\r\nEND\r\n")


def test_wrong_password_then_right_one(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 11\r\nalice wrong\r\n", FAILURE)
        c.expect(b"set a 0 0 11\r\nbob hunter3\r\n", FAILURE)
        c.expect(b"set a 0 0 11\r\nbob hunter2\r\n", b"STORED\r\n")


# ---- missing newlines, partial lines and blocks ----

def test_partial_line_and_block(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 12", b"")
        c.expect(b"\r\nalice se", b"")
        c.expect(b"cret", b"")
        c.expect(b"\r", b"")
        c.expect(b"\n", b"STORED\r\n")


def test_block_without_its_newline(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 12\r\nalice secretXX", b"CLIENT_ERROR bad command line termination\r\n")
        c.expect(b"set a 0 0 12\r\nalice secret\n\n", b"CLIENT_ERROR bad command line termination\r\n")
        # a block longer than the credentials takes the next bytes: the
        # password becomes "secret\r\n"
        c.expect(b"set a 0 0 14\r\nalice secret\r\n", b"")
        c.expect(b"\r\n", FAILURE)


def test_bare_newlines(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 12\nalice secret\r\nversion\n", b"STORED\r\nVERSION 1.6.18\r\n")


def test_lengths_that_wrap(authed_server):
    with Conn(authed_server.addr) as c:
        # size + 2 in 32 bits: 0, then 1 (which takes one byte of what follows)
        c.expect(b"set a 0 0 4294967294\r\n", b"CLIENT_ERROR bad command line termination\r\n")
        c.expect(b"set a 0 0 4294967295\r\n", b"")
        c.expect(b"X", b"CLIENT_ERROR bad command line termination\r\n")
        c.expect(b"set a 0 0 4294967296\r\n\r\n", b"CLIENT_ERROR bad authentication token format\r\n")


def test_lone_newline_waits_for_a_second_byte(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(b"\n", b"")
        c.expect(b"\n", UNAUTH)


@pytest.mark.parametrize("n, state", [(2048, OPEN), (2049, CLOSED), (5000, CLOSED)])
def test_line_without_newline(authed_server, n, state):
    with Conn(authed_server.addr) as c:
        c.expect(b"x" * n, b"", state)


def test_junk_culls_what_the_batch_answered(authed_server):
    # "get" or not: before authentication a long line is junk
    with Conn(authed_server.addr) as c:
        c.expect(b"get a\r\n" + b"get " + b"k " * 1500, b"", CLOSED)


# ---- pipelines before authentication ----

@pytest.mark.parametrize("lines, replies", [
    (1, 1), (5, 1), (21, 1), (22, 2), (41, 2), (42, 3), (61, 3), (62, 4)])
def test_pipeline_before_auth(authed_server, lines, replies):
    # one reply per batch: memcached's -R budget of 20 (+ 1 on fresh input)
    with Conn(authed_server.addr) as c:
        c.expect(b"get a\r\nversion\r\n" * (lines // 2) + b"mn\r\n" * (lines % 2),
                 UNAUTH * replies)


def test_pipeline_with_credentials_inside(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(b"get a\r\nstats\r\n" + OK + b"set k 0 0 1\r\nv\r\nget k\r\n",
                 b"STORED\r\nSTORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n")
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 11\r\nalice wrong\r\nget a\r\n", UNAUTH)
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 11\r\nalice wrong\r\n" + OK + b"get a\r\n", b"STORED\r\nEND\r\n")


def test_pipeline_after_a_split_block(authed_server):
    # the block completing in a later read counts as that read's first request
    for gets, replies in ((20, 1), (21, 2)):
        with Conn(authed_server.addr) as c:
            c.expect(b"set a 0 0 11\r\n", b"")
            c.expect(b"alice wrong\r\n" + b"get a\r\n" * gets, UNAUTH * replies)


# ---- a huge "password" ----

def _block(size, text=b"alice secret"):
    return b"set a 0 0 %d\r\n" % size + text + b" " * (size - len(text)) + b"\r\n"


def test_largest_password_block(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(_block(16382) + b"version\r\n", b"STORED\r\nVERSION 1.6.18\r\n")


@pytest.mark.parametrize("size", [16383, 100000, 1 << 20, 2 << 20], ids=str)
def test_huge_password_block_closes(authed_server, size):
    # 1 MiB is -I (1m) and 2 MiB over it: before authentication -I is not
    # looked at, only memcached's 16 KiB read buffer
    with Conn(authed_server.addr) as c:
        c.expect(b"get a\r\n" + _block(size), UNAUTH, CLOSED)
    # never counted; the server still serves
    with Conn(authed_server.addr) as c:
        c.expect(OK, b"STORED\r\n")
        before = stats(c)["auth_cmds"]
    with Conn(authed_server.addr) as c:
        c.expect(b"get a\r\n" + _block(size), UNAUTH, CLOSED)
    with Conn(authed_server.addr) as c:
        c.expect(OK, b"STORED\r\n")
        assert int(stats(c)["auth_cmds"]) == int(before) + 1


def test_huge_password_block_waits_for_more(authed_server):
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 1048576\r\n" + b"x" * 16000, b"")
        c.expect(b"x" * 384, b"")
        c.expect(b"x", b"", CLOSED)


def test_password_over_int_max_closes(authed_server, backend):
    if not BACKENDS[backend].is_mpcache:
        pytest.skip("memcached 1.6.18 reads outside its buffer and crashes on this length")
    with Conn(authed_server.addr) as c:
        c.expect(b"set a 0 0 3000000000\r\n" + b"x" * 20000, b"", CLOSED)


# ---- stats ----

def test_auth_stats(fresh_authed_server):
    addr = fresh_authed_server.addr
    with Conn(addr) as c:
        c.expect(b"set a 0 0 11\r\nalice wrong\r\n", FAILURE)
    with Conn(addr) as c:
        c.expect(b"set a 0 0 9\r\neve wrong\r\n", FAILURE)
    with Conn(addr) as c:
        # not credentials, not counted
        c.expect(b"set a 0 0 5\r\nalice\r\n", b"CLIENT_ERROR bad authentication token format\r\n")
        c.expect(b"set a 0 0 3\r\nalice", b"CLIENT_ERROR bad command line termination\r\n")
        c.expect(b"get a\r\n", UNAUTH)
    with Conn(addr) as c:
        c.expect(OK, b"STORED\r\n")
        st = stats(c)
        assert (st["auth_cmds"], st["auth_errors"]) == ("3", "2")
        assert (st["cmd_get"], st["cmd_set"], st["curr_items"]) == ("0", "0", "0")
        settings = stats(c, b"settings")
        assert settings["auth_enabled_ascii"] == fresh_authed_server.auth_path
        assert settings["auth_enabled_sasl"] == "no"
        assert settings["binding_protocol"] == "ascii"
        c.expect(b"stats reset\r\n", b"RESET\r\n")
        st = stats(c)
        assert (st["auth_cmds"], st["auth_errors"]) == ("0", "0")


def test_stats_without_auth(server):
    with Conn(server.addr) as c:
        st = stats(c)
        assert (st["auth_cmds"], st["auth_errors"]) == ("0", "0")
        assert stats(c, b"settings")["auth_enabled_ascii"] == "no"


# ---- the file ----

@pytest.mark.parametrize("content, works, fails", [
    # the first read stops one byte short of the file's size
    (b"a:bc", [b"a b"], [b"a bc"]),
    (b"a:bc\n", [b"a bc"], []),
    (b"a:b\r\nc:d:e f\r\n", [b"a b"], [b"c d:e", b"c d"]),
    (b"a:b\0c\nd:e\n", [b"a b"], [b"d e"]),
    (b"".join(b"u%d:p\n" % i for i in range(1, 9)) + b"no colon\n", [b"u1 p", b"u8 p"], []),
    (b"".join(b"u%d:p\n" % i for i in range(1, 10)), [b"u8 p"], [b"u9 p"]),
    (b"u:" + b"p" * 298 + b"\nv:w\n", [b"u " + b"p" * 253], [b"u " + b"p" * 298, b"v w"]),
], ids=["no-newline", "one-line", "crlf", "nul", "ninth-line-unread", "eight-entries",
        "long-line"])
def test_file_format(server_factory, tmp_path, content, works, fails):
    srv = server_factory(threads=1, extra=("-Y", auth_file(tmp_path, content)))
    for creds in works:
        with Conn(srv.addr) as c:
            c.expect(b"set a 0 0 %d\r\n%s\r\n" % (len(creds), creds), b"STORED\r\n")
    for creds in fails:
        with Conn(srv.addr) as c:
            c.expect(b"set a 0 0 %d\r\n%s\r\n" % (len(creds), creds), FAILURE)


@pytest.mark.parametrize("kind", ["empty", "directory"])
def test_file_without_entries_starts(server_factory, tmp_path, kind):
    path = auth_file(tmp_path, b"") if kind == "empty" else str(tmp_path)
    srv = server_factory(threads=1, extra=("-Y", path))
    with Conn(srv.addr) as c:
        c.expect(OK, FAILURE)
        c.expect(b"get a\r\n", UNAUTH)


def _wait_until(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.1)
    return False


def _authenticates(addr, creds):
    with Conn(addr) as c:
        got, _ = c.exchange(b"set a 0 0 %d\r\n%s\r\n" % (len(creds), creds), 8)
        return got == b"STORED\r\n"


def test_sighup_reloads_the_file(fresh_authed_server):
    srv = fresh_authed_server
    addr, path = srv.addr, srv.auth_path
    with Conn(addr) as kept:
        kept.expect(OK, b"STORED\r\n")
        with open(path, "wb") as f:
            f.write(b"carol:x\n")
        os.kill(srv.proc.pid, signal.SIGHUP)
        # memcached reloads on its next clock tick, within a second
        assert _wait_until(lambda: _authenticates(addr, b"carol x"))
        assert not _authenticates(addr, b"alice secret")
        # a connection that authenticated stays so
        kept.expect(b"get a\r\n", b"END\r\n")
        # a malformed or missing file keeps the table in use
        for content in (b"malformed\n", None):
            if content is None:
                os.unlink(path)
            else:
                with open(path, "wb") as f:
                    f.write(content)
            os.kill(srv.proc.pid, signal.SIGHUP)
            time.sleep(1.5)
            assert _authenticates(addr, b"carol x")
    assert srv.alive()


# ---- the Unix socket ----

def test_unix_socket(backend, tmp_path):
    b = BACKENDS[backend]
    path = str(tmp_path / "mc.sock")
    cmd = b.command(free_port(), 1, 64, "1m", 1024, ("-s", path, "-Y", auth_file(tmp_path)))
    env = dict(os.environ, **dict(b.env))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT, start_new_session=True)
    try:
        assert _wait_until(lambda: os.path.exists(path) and _unix_answers(path), 15), \
            proc.stderr.read1(8000) if proc.poll() is not None else "not serving"
        with Conn(path, socket.AF_UNIX) as c:
            c.expect(b"get a\r\nversion\r\n", UNAUTH)
            c.expect(b"set a 0 0 11\r\nalice wrong\r\n", FAILURE)
            c.expect(OK, b"STORED\r\n")
            c.expect(b"set k 0 0 1\r\nv\r\nget k\r\n", b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n")
            st = stats(c)
            assert (st["auth_cmds"], st["auth_errors"]) == ("2", "1")
        with Conn(path, socket.AF_UNIX) as c:
            c.expect(b"get k\r\n", UNAUTH)
            c.expect(_block(1 << 20), b"", CLOSED)
    finally:
        proc.send_signal(b.stop_signal)
        proc.wait(10)


def _unix_answers(path):
    try:
        with Conn(path, socket.AF_UNIX, timeout=1.0) as c:
            return c.exchange(b"version\r\n", len(UNAUTH))[0] == UNAUTH
    except OSError:
        return False


# ---- start-up: refused like memcached ----

MEMCACHED = BACKENDS["memcached"].argv
MPCACHE = (sys.executable, "-m", "mpcache")
AS_ROOT = ("-u", "root") if os.geteuid() == 0 else ()


def _run(argv, args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    as_root = () if "-u" in args else AS_ROOT
    try:
        r = subprocess.run(list(argv) + ["-p", str(free_port()), "-l", HOST, "-U", "0"]
                           + list(args) + list(as_root),
                           capture_output=True, text=True, timeout=10, env=env, cwd=ROOT,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "started", ""
    return r.returncode, r.stderr


def _startup_cases(tmp_path):
    malformed = auth_file(tmp_path, b"alice:secret\nno colon here\n", "malformed")
    blank = auth_file(tmp_path, b"alice:secret\n\n", "blank-line")
    missing = str(tmp_path / "missing")
    long_path = "/" + "d" * 250 + ("/" + "d" * 250) * 20
    return [
        (["-Y", missing], 1,
         f"Could not open authfile [{missing}] for reading, error No such file or directory: "
         "No such file or directory\n"),
        (["-Y", malformed], 1,
         f"Authfile [{malformed}] has a malformed entry. Should be 'user:password'"),
        (["-Y", blank], 1, f"Authfile [{blank}] has a malformed entry. Should be 'user:password'"),
        (["-Y", ""], 1,
         "Could not open authfile [] for reading, error No such file or directory: "
         "No such file or directory\n"),
        (["-Y", long_path], 1,
         f"Could not open authfile [{long_path}] for reading, error File name too long"[:1023]
         + ": File name too long\n"),
        (["-Y", missing, "-U", "11311"], 64,
         "Cannot use UDP with ascii authentication enabled (-U 0 to disable)\n"),
        (["-Y", missing, "-B", "binary"], 64,
         "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.\n"),
        (["-B", "auto", "-Y", missing], 64,
         "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.\n"),
    ] + _unreadable_case(tmp_path)


def _unreadable_case(tmp_path):
    # both read the file as the -u user
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return []
    path = auth_file(tmp_path, AUTH_FILE, "unreadable")
    os.chmod(path, 0)
    return [(["-Y", path, "-u", "nobody"], 1,
             f"Could not open authfile [{path}] for reading, error Permission denied: "
             "Permission denied\n")]


def test_bad_file_refuses_to_start_like_memcached(tmp_path):
    for args, code, message in _startup_cases(tmp_path):
        theirs = _run(MEMCACHED, args)
        ours = _run(MPCACHE, args)
        assert theirs == (code, message), args
        # memcached ends its malformed-entry message without a newline;
        # mpcache ends the line
        assert (ours[0], ours[1].rstrip("\n")) == (code, message.rstrip("\n")), args
        assert ours[1].endswith("\n")


# ---- the embedded API ----

def test_embedded_server_with_auth_file(tmp_path):
    import mpcache
    with mpcache.Server(port=0, auth_file=auth_file(tmp_path)) as srv:
        with Conn(srv.address) as c:
            c.expect(b"get a\r\n", UNAUTH)
            c.expect(OK, b"STORED\r\n")
        # the server's own view needs no credentials
        assert srv.stats()["auth_cmds"] == 1
        assert srv.stats("settings")["auth_enabled_ascii"] == str(tmp_path / "auth")
    bad = auth_file(tmp_path, b"no colon\n", "bad")
    with pytest.raises(mpcache.ConfigError, match=r"^Authfile \[.*bad\] has a malformed entry"):
        mpcache.Server(port=0, auth_file=bad).start()
