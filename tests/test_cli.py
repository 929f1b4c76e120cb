"""The command line and the process life cycle, as tools see them: real
`python -m mpcache` processes (and the embedded Server in this process).

Where mpcache claims memcached's behaviour (messages, exit codes, the port
file), the test runs memcached with the same arguments and compares.
"""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mpcache  # noqa: E402
from mpcache.cli import OPTIONS, VERSION_LINE, parse_args  # noqa: E402
from mpcache.config import ConfigError  # noqa: E402

HOST = "127.0.0.1"
# This file's ports (the other suites use other ranges).
PORT_RANGE = range(23200, 23300)
START_TIMEOUT = 15.0
# memcached refuses to run as root without -u, and so does mpcache.
AS_ROOT = ["-u", "root"] if os.geteuid() == 0 else []
MPCACHE = [sys.executable, "-m", "mpcache"]
MEMCACHED = shutil.which("memcached")


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MEMCACHED_PORT_FILENAME", None)
    env.update(extra)
    return env


def run_cli(args, timeout=20, env=None):
    """Runs mpcache to completion (for flags that exit at once)."""
    return subprocess.run(MPCACHE + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env or _env(), cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def run_memcached(args, timeout=20):
    return subprocess.run([MEMCACHED] + list(args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def free_port():
    ports = list(PORT_RANGE)
    first = (os.getpid() * 7) % len(ports)
    for port in ports[first:] + ports[:first]:
        s = socket.socket()
        try:
            s.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in this suite's range")


def call(addr, request, timeout=5.0, family=socket.AF_INET):
    """Sends request, returns everything read until the reply ends in
    "\\r\\n" and the server goes quiet, or EOF."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(addr)
        s.sendall(request)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                s.settimeout(0.3 if out.endswith(b"\r\n") else timeout)
                chunk = s.recv(65536)
            except socket.timeout:
                if out.endswith(b"\r\n"):
                    break
                continue
            if not chunk:
                break
            out += chunk
        return out


def wait_serving(addr, proc=None, family=socket.AF_INET):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if call(addr, b"version\r\n", timeout=1.0, family=family).startswith(b"VERSION "):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not serving on {addr} after {START_TIMEOUT}s")


class Proc:
    """A running `python -m mpcache`, killed at the end of the test."""
    live = []

    def __init__(self, args, env=None):
        self.args = list(args)
        self.p = subprocess.Popen(MPCACHE + self.args, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env or _env(), cwd=ROOT, start_new_session=True)
        Proc.live.append(self.p)

    def wait(self, timeout=10):
        return self.p.wait(timeout)

    def signal(self, sig):
        self.p.send_signal(sig)

    def stderr(self):
        return self.p.stderr.read()


@pytest.fixture(autouse=True)
def _reap():
    yield
    for p in Proc.live:
        if p.poll() is None:
            p.kill()
            p.wait()
    Proc.live.clear()


def start(args, addr=None, env=None):
    proc = Proc(list(args) + AS_ROOT, env=env)
    if addr is not None:
        wait_serving(addr, proc.p)
    return proc


# -- flags that exit at once --------------------------------------------------

def test_help_lists_every_memcached_flag():
    r = run_cli(["-h"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == VERSION_LINE
    # Every flag of memcached 1.6.18's -h, in its format.
    for flag in ("-p, --port=<num>", "-U, --udp-port=<num>", "-s, --unix-socket=<file>",
                 "-a, --unix-mask=<mask>", "-A, --enable-shutdown", "-l, --listen=<addr>",
                 "-d, --daemon", "-r, --enable-coredumps", "-u, --user=<user>",
                 "-m, --memory-limit=<num>", "-M, --disable-evictions", "-c, --conn-limit=<num>",
                 "-k, --lock-memory", "-v, --verbose", "-vv ", "-vvv ", "-h, --help",
                 "-i, --license", "-V, --version", "-P, --pidfile=<file>",
                 "-f, --slab-growth-factor=<num>", "-n, --slab-min-size=<bytes>",
                 "-L, --enable-largepages", "-D <char>", "-t, --threads=<num>",
                 "-R, --max-reqs-per-event", "-C, --disable-cas", "-b, --listen-backlog=<num>",
                 "-B, --protocol=<name>", "-I, --max-item-size=<num>", "-S, --enable-sasl",
                 "-F, --disable-flush-all", "-X, --disable-dumping", "-W, --disable-watch",
                 "-Y, --auth-file=<file>", "-e, --memory-file=<file>", "-Z, --enable-ssl",
                 "-o, --extended", "-N, --napi-ids", "--io-engine=<name>"):
        assert any(line.lstrip().startswith(flag) for line in lines), flag
    assert "   - idle_timeout:" in r.stdout
    assert r.stderr == ""


@pytest.mark.skipif(MEMCACHED is None, reason="memcached not installed")
def test_help_covers_memcacheds_help():
    """Every flag memcached's own -h shows appears in ours."""
    theirs = run_memcached(["-h"]).stdout
    ours = run_cli(["-h"]).stdout
    for line in theirs.splitlines():
        if line.startswith("-"):
            flag = line.split()[0].rstrip(",")
            assert any(l.startswith(flag) for l in ours.splitlines()), flag


def test_version():
    r = run_cli(["-V"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "mpcache 0.1.0 (memcached 1.6.18 compatible)\n", "")
    assert run_cli(["--version"]).stdout == r.stdout


def test_license():
    r = run_cli(["-i"])
    assert r.returncode == 0 and "BSD" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "mpcache: unrecognized option '--bogus'"),
    (["-Q"], "mpcache: invalid option -- 'Q'"),
    (["-p"], "mpcache: option requires an argument -- 'p'"),
    (["--port"], "mpcache: option '--port' requires an argument"),
    (["--daemon=yes"], "mpcache: option '--daemon' doesn't allow an argument"),
    (["stray"], "mpcache: unexpected argument 'stray'"),
])
def test_unknown_flag_is_usage_error(args, message):
    r = run_cli(args)
    assert r.returncode == 64
    assert r.stderr.splitlines()[0] == message
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


# Settings memcached refuses: mpcache refuses them with memcached's message
# and exit status (compared with the real memcached below).
REFUSED_LIKE_MEMCACHED = [
    (["-c", "0"], 1, "Maximum connections must be greater than 0"),
    (["-c", "-5"], 1, "Maximum connections must be greater than 0"),
    (["-t", "0"], 1, "Number of threads must be greater than 0"),
    (["-I", "1000"], 64, "Item max size cannot be less than 1024 bytes."),
    (["-I", "256m", "-m", "64"], 64, "Cannot set item size limit higher than 1/2 of memory max."),
    (["-m", "0"], 64, "Cannot set item size limit higher than 1/2 of memory max."),
    (["-I", "2000m", "-m", "10000"], 64, "Cannot set item size limit higher than a gigabyte."),
    (["-p", "70000"], 64, "ERROR: Invalid port number 70000."),
    (["-R", "0"], 1, "Number of requests per event must be greater than 0"),
    (["-f", "1.0"], 1, "Factor must be greater than 1"),
    (["-n", "0"], 1, "Chunk size must be greater than 0"),
    (["-o", "bogus_key=1"], 1, 'Illegal suboption "bogus_key=1"'),
    (["-o", "idle_timeout"], 1, "Missing numeric argument for idle_timeout"),
    (["-D", ""], 1, "No delimiter specified"),
    (["-B", "foo"], 64, "Invalid value for binding protocol: foo"),
    (["-l", "fooble"], 71, "getaddrinfo(): Name or service not known"),
    (["-u", "no_such_user_here"], 67, "can't find the user no_such_user_here to switch to"),
]

# Refused by mpcache where memcached is lax (atoi) or has no such setting.
REFUSED_BY_MPCACHE = [
    (["-p", "abc"], 64, "ERROR: Invalid port number abc."),
    (["-p", "-5"], 64, "ERROR: Invalid port number -5."),
    (["-U", "99999"], 64, "ERROR: Invalid UDP port number 99999."),
    (["-t", "abc"], 64, 'Invalid number for -t: "abc"'),
    (["-I", "1.5m"], 64, 'Invalid item size "1.5m": bytes, or a number with a k or m suffix'),
    (["-I", "2000m", "-m", "100000"], 64, "Cannot set item size limit higher than a gigabyte."),
    (["-m", "lots"], 64, 'Invalid memory limit "lots": a number of megabytes'),
    (["-a", "999"], 64, 'Invalid unix socket mask "999" (octal, e.g. 700)'),
    (["-S", "-B", "ascii"], 64, "ERROR: You cannot allow the ASCII protocol while using SASL."),
    (["-S", "-B", "auto"], 64, "ERROR: You cannot allow the ASCII protocol while using SASL."),
    (["-S", "-U", "11211"], 64, "ERROR: Cannot enable UDP while using binary SASL authentication."),
    (["--io-engine", "fast"], 64, "Invalid io engine 'fast': one of auto, uring, epoll"),
    (["-t", "5000"], 1, "Number of threads must be at most 1024"),
    (["-l", "[::1"], 71, 'Invalid IPV6 address: "[::1"'),
    (["-l", "127.0.0.1:99999"], 71, 'Invalid port number: "99999"'),
]


def _as_root(args):
    return [] if "-u" in args else AS_ROOT


def _port(args):
    # A free port unless the test is about -p (a later -p would win).
    return [] if "-p" in args else ["-p", str(free_port())]


def _refused(args, code, message):
    t0 = time.monotonic()
    r = run_cli(list(args) + _port(args) + _as_root(args))
    assert time.monotonic() - t0 < 10, "refusal must be prompt"
    assert r.returncode == code, r.stderr
    assert r.stderr.splitlines()[0].startswith(message), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args, code, message", REFUSED_LIKE_MEMCACHED,
                         ids=[" ".join(a) for a, _, _ in REFUSED_LIKE_MEMCACHED])
def test_invalid_setting_refused_like_memcached(args, code, message):
    _refused(args, code, message)


@pytest.mark.skipif(MEMCACHED is None, reason="memcached not installed")
@pytest.mark.parametrize("args, code, message", REFUSED_LIKE_MEMCACHED,
                         ids=[" ".join(a) for a, _, _ in REFUSED_LIKE_MEMCACHED])
def test_memcached_refuses_the_same(args, code, message):
    """The reference: the expectations above are memcached's own."""
    r = run_memcached(list(args) + _port(args) + ["-l", HOST, "-U", "0"] + _as_root(args))
    assert r.returncode == code, r.stderr
    assert r.stderr.splitlines()[0] == message


@pytest.mark.parametrize("args, code, message", REFUSED_BY_MPCACHE,
                         ids=[" ".join(a) for a, _, _ in REFUSED_BY_MPCACHE])
def test_invalid_setting_refused(args, code, message):
    _refused(args, code, message)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_needs_u_like_memcached():
    r = run_cli(["-p", str(free_port())])
    assert (r.returncode, r.stderr) == (64, "can't run as root without the -u switch\n")
    if MEMCACHED:
        m = run_memcached(["-p", str(free_port()), "-U", "0"])
        assert (m.returncode, m.stderr) == (r.returncode, r.stderr)


def test_port_in_use_is_refused():
    port = free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        s.listen()
        r = run_cli(["-p", str(port), "-l", HOST] + AS_ROOT)
    assert r.returncode == 71
    assert "Address already in use" in r.stderr and "Traceback" not in r.stderr


def test_second_server_on_same_port_is_refused():
    """SO_REUSEPORT must not let a second mpcache silently share the port."""
    port = free_port()
    start(["-p", str(port), "-l", HOST, "-t", "2"], (HOST, port))
    r = run_cli(["-p", str(port), "-l", HOST, "-t", "2"] + AS_ROOT)
    assert r.returncode == 71, r.stderr
    assert "Address already in use" in r.stderr


# -- option syntax ------------------------------------------------------------

def test_option_forms():
    for argv in (["-p", "11300"], ["-p11300"], ["--port=11300"], ["--port", "11300"],
                 ["--po=11300"]):
        assert parse_args(argv).settings.port == 11300, argv
    s = parse_args(["-vv", "-v", "-l", "10.0.0.1,10.0.0.2", "-l", "::1", "-I", "2k",
                    "-m", "128", "-o", "idle_timeout=5,no_maxconns_fast,relaxed_privileges",
                    "-A", "-C", "-M", "-F", "-a", "0660", "--threads=3", "-R5", "-b", "64"]).settings
    assert (s.verbose, s.listen, s.max_item_size, s.memory_mb) == \
        (3, ["10.0.0.1", "10.0.0.2", "::1"], 2048, 128)
    assert (s.idle_timeout, s.maxconns_fast, s.enable_shutdown, s.use_cas) == (5, False, True, False)
    assert (s.evict_to_free, s.flush_enabled, s.unix_mask, s.threads) == (False, False, 0o660, 3)
    assert (s.reqs_per_event, s.backlog) == (5, 64)
    assert parse_args(["-I", "1m"]).settings.max_item_size == 1024 * 1024
    assert parse_args(["-I", "1048576"]).settings.max_item_size == 1024 * 1024
    assert parse_args(["-I", "1024m", "-m", "4096"]).settings.max_item_size == 1024 ** 3
    assert parse_args(["-p", "-1"]).settings.port == -1


def test_defaults():
    s = parse_args([]).settings
    assert (s.port, s.listen, s.memory_mb, s.max_conns, s.max_item_size) == \
        (11211, ["127.0.0.1"], 64, 1024, 1024 * 1024)
    assert s.threads == max(1, len(os.sched_getaffinity(0)) // 2)
    assert (s.udp_port, s.unix_mask, s.backlog, s.reqs_per_event) == (0, 0o700, 1024, 20)


def test_memcached_only_options_warn():
    s = parse_args(["-o", "hashpower=20,modern", "-k", "-L"])
    assert len(s.warnings) == 4
    with pytest.raises(ConfigError) as e:
        parse_args(["-o", "bogus"])
    assert e.value.message == 'Illegal suboption "bogus"'


def test_every_option_row_parses():
    """The table is the parser: each row's flag is accepted by getopt."""
    for o in OPTIONS:
        if not (o.short or o.long) or o.short in ("h", "V", "i", "S", "Z", "Y"):
            continue
        value = {"p": "1", "U": "0", "a": "700", "l": "127.0.0.1", "u": "nobody", "m": "64",
                 "c": "10", "f": "1.5", "n": "48", "t": "2", "R": "5", "b": "10", "B": "ascii",
                 "I": "1m", "o": "idle_timeout=1", "io-engine": "epoll"}.get(o.short or o.long, "x")
        flag = f"-{o.short}" if o.short else f"--{o.long}"
        parse_args([flag, value] if o.arg else [flag])


# -- running processes --------------------------------------------------------

def test_ephemeral_port_file_like_memcached(tmp_path):
    pf = tmp_path / "ports"
    proc = start(["-p", "-1", "-l", HOST, "-t", "2"], env=_env(MEMCACHED_PORT_FILENAME=str(pf)))
    deadline = time.monotonic() + START_TIMEOUT
    while not pf.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    text = pf.read_text()
    assert text.startswith("TCP INET: ") and text.endswith("\n") and text.count("\n") == 1, text
    port = int(text.split(": ")[1])
    assert port > 0
    assert not (tmp_path / "ports.lck").exists()
    wait_serving((HOST, port), proc.p)
    assert call((HOST, port), b"set k 0 0 2\r\nhi\r\nget k\r\n") == \
        b"STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    if MEMCACHED:
        mpf = tmp_path / "memcached-ports"
        env = dict(os.environ, MEMCACHED_PORT_FILENAME=str(mpf))
        m = subprocess.Popen([MEMCACHED, "-p", "-1", "-l", HOST, "-U", "0"] + AS_ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not mpf.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            theirs = mpf.read_text()
        finally:
            m.terminate()
            m.wait(10)
        assert theirs.split(": ")[0] == text.split(": ")[0]
        assert theirs.endswith("\n") and theirs.count("\n") == 1


def test_port_file_lists_udp_like_memcached(tmp_path):
    udp = free_port()

    def lines(argv, pf):
        deadline = time.monotonic() + START_TIMEOUT
        while not pf.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return pf.read_text().splitlines()

    pf = tmp_path / "ports"
    proc = start(["-p", "-1", "-U", str(udp), "-l", HOST, "-t", "2"],
                 env=_env(MEMCACHED_PORT_FILENAME=str(pf)))
    ours = lines(None, pf)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert [ln.split(": ")[0] for ln in ours] == ["TCP INET", "UDP INET"]
    assert ours[1] == f"UDP INET: {udp}"
    if MEMCACHED:
        mpf = tmp_path / "memcached-ports"
        env = dict(os.environ, MEMCACHED_PORT_FILENAME=str(mpf))
        m = subprocess.Popen([MEMCACHED, "-p", "-1", "-U", str(udp), "-l", HOST] + AS_ROOT,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            theirs = lines(None, mpf)
        finally:
            m.terminate()
            m.wait(10)
        assert [ln.split(": ")[0] for ln in theirs] == ["TCP INET", "UDP INET"]
        assert theirs[1] == ours[1]


def test_port_file_lists_every_address(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    pf = tmp_path / "ports"
    proc = start(["-p", "-1", "-l", f"{HOST},::1", "-t", "2"],
                 env=_env(MEMCACHED_PORT_FILENAME=str(pf)))
    deadline = time.monotonic() + START_TIMEOUT
    while not pf.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = pf.read_text().splitlines()
    assert [l.split(": ")[0] for l in lines] == ["TCP INET", "TCP INET6"]
    port = int(lines[0].split(": ")[1])
    assert int(lines[1].split(": ")[1]) == port
    wait_serving((HOST, port), proc.p)
    wait_serving(("::1", port), proc.p, family=socket.AF_INET6)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_with_status_0(sig):
    port = free_port()
    proc = start(["-p", str(port), "-l", HOST, "-t", "2", "-v"], (HOST, port))
    t0 = time.monotonic()
    proc.signal(sig)
    assert proc.wait() == 0
    assert time.monotonic() - t0 < 5
    err = proc.stderr()
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "Exiting normally"
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=1).close()


def test_sigusr1_stops_gracefully_and_sighup_is_ignored():
    """As memcached 1.6 (whose SIGUSR1 is its graceful stop)."""
    port = free_port()
    proc = start(["-p", str(port), "-l", HOST], (HOST, port))
    proc.signal(signal.SIGHUP)
    time.sleep(0.3)
    assert proc.p.poll() is None
    assert call((HOST, port), b"version\r\n") == b"VERSION 1.6.18\r\n"
    proc.signal(signal.SIGUSR1)
    assert proc.wait() == 0
    assert proc.stderr() == "Gracefully stopping\n"


def test_verbose_logs_engine_and_channels():
    port = free_port()
    proc = start(["-p", str(port), "-l", HOST, "-t", "2", "-v"], (HOST, port))
    proc.signal(signal.SIGTERM)
    proc.wait()
    first = proc.stderr().splitlines()[0]
    assert first.startswith("mpcache: engine ") and f", 2 channels, listening on {HOST}:{port}" in first


def test_flags_reach_the_engine():
    port = free_port()
    start(["--port", str(port), "--listen=" + HOST, "--threads=2", "-m", "32", "-c", "77",
           "-I", "512k", "-R", "7", "-C", "-o", "idle_timeout=9"], (HOST, port))
    reply = call((HOST, port), b"stats settings\r\n").decode()
    st = dict(line.split(" ", 2)[1:] for line in reply.splitlines() if line.startswith("STAT "))
    assert (st["maxbytes"], st["maxconns"], st["tcpport"]) == (str(32 << 20), "77", str(port))
    assert (st["num_threads"], st["item_size_max"], st["reqs_per_event"]) == ("2", "524288", "7")
    assert (st["cas_enabled"], st["idle_timeout"]) == ("no", "9")


def test_udp_port_without_port_moves_the_tcp_port():
    # as memcached: -U without -p serves TCP on the UDP port too
    port = free_port()
    proc = start(["-l", HOST, "-U", str(port)], (HOST, port))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.settimeout(5)
        u.sendto(b"\x00\x07\x00\x00\x00\x01\x00\x00version\r\n", (HOST, port))
        assert u.recv(2048) == b"\x00\x07\x00\x00\x00\x01\x00\x00VERSION 1.6.18\r\n"
    finally:
        u.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert "UDP" not in proc.stderr()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_user_drops_privileges_after_binding():
    import pwd
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    port = free_port()
    proc = Proc(["-p", str(port), "-l", HOST, "-t", "2", "-u", "nobody"])
    wait_serving((HOST, port), proc.p)
    with open(f"/proc/{proc.p.pid}/status") as f:
        ids = {line.split(":")[0]: line.split()[1:] for line in f if ":" in line}
    assert ids["Uid"] == [str(nobody.pw_uid)] * 4
    assert ids["Gid"] == [str(nobody.pw_gid)] * 4
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: -u drops privileges only from root")
@pytest.mark.parametrize("writable", [False, True], ids=["root-dir", "user-dir"])
def test_unix_socket_with_user_removed_or_reported(writable):
    """-u nobody: the socket file is removed at exit when nobody may write
    its directory, else left behind with a warning at start and at exit."""
    import pwd
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    # Not under tmp_path: pytest's base directory is root's alone (0700),
    # and the user must reach the directory to meet only its write bit.
    folder = tempfile.mkdtemp(prefix="mpcache-u-")
    try:
        os.chmod(folder, 0o755)
        if writable:
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        path = os.path.join(folder, "mc.sock")
        proc = Proc(["-s", path, "-t", "1", "-u", "nobody"])
        wait_serving(path, proc.p, family=socket.AF_UNIX)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        err = proc.stderr()
        if writable:
            assert (err, os.path.exists(path)) == ("", False)
        else:
            why = f"user nobody may not write to {folder}"
            assert err.splitlines() == [
                f"WARNING: the UNIX socket {path} will be left behind at exit: {why}",
                f"WARNING: the UNIX socket {path} is left behind: cannot remove it: "
                f"Permission denied ({why})"]
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        shutil.rmtree(folder)


def test_daemon_writes_pid_file_and_serves(tmp_path):
    port = free_port()
    pidfile = tmp_path / "mpcache.pid"
    t0 = time.monotonic()
    r = run_cli(["-d", "-P", str(pidfile), "-p", str(port), "-l", HOST, "-t", "1"] + AS_ROOT)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 10
    assert (r.stdout, r.stderr) == ("", "")
    text = pidfile.read_text()
    assert text.endswith("\n")
    pid = int(text)
    try:
        os.kill(pid, 0)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        # The starting process returns once the daemon serves.
        assert call((HOST, port), b"version\r\n") == b"VERSION 1.6.18\r\n"
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists(), "pid file removed at exit"
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def _gone(pid):
    """Exited (a zombie counts: in a container nobody may reap the daemon)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_daemon_start_failure_is_reported(tmp_path):
    port = free_port()
    with socket.socket() as s:
        s.bind((HOST, port))
        s.listen()
        r = run_cli(["-d", "-P", str(tmp_path / "p"), "-p", str(port), "-l", HOST] + AS_ROOT)
    assert r.returncode == 71 and "Address already in use" in r.stderr


def test_unix_socket_with_mask(tmp_path):
    path = str(tmp_path / "mc.sock")
    proc = start(["-s", path, "-a", "0660", "-t", "2"])
    wait_serving(path, proc.p, family=socket.AF_UNIX)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    assert call(path, b"set u 0 0 1\r\nx\r\nget u\r\n", family=socket.AF_UNIX) == \
        b"STORED\r\nVALUE u 0 1\r\nx\r\nEND\r\n"
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert not os.path.exists(path), "socket file removed at exit"


def test_unix_socket_default_mask_and_stale_file(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()            # leaves the file, as a crashed server would
    proc = start(["-s", path])
    wait_serving(path, proc.p, family=socket.AF_UNIX)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700
    # A live server's socket is not taken over.
    r = run_cli(["-s", path] + AS_ROOT)
    assert r.returncode == 71 and "Address already in use" in r.stderr
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0


def test_shutdown_with_A_stops_the_server():
    port = free_port()
    proc = start(["-p", str(port), "-l", HOST, "-A", "-t", "2"], (HOST, port))
    assert call((HOST, port), b"shutdown\r\n") == b""
    assert proc.wait() == 0
    assert "Traceback" not in proc.stderr()


def test_shutdown_without_A_is_refused():
    port = free_port()
    proc = start(["-p", str(port), "-l", HOST], (HOST, port))
    assert call((HOST, port), b"shutdown\r\n") == b"ERROR: shutdown not enabled\r\n"
    time.sleep(0.2)
    assert proc.p.poll() is None
    assert call((HOST, port), b"version\r\n") == b"VERSION 1.6.18\r\n"


# -- embedded API -------------------------------------------------------------

def test_embedded_server_serves_pymemcache():
    from pymemcache.client.base import Client
    with mpcache.Server(port=0, threads=1, memory_mb=64) as srv:
        host, port = srv.address
        assert host == HOST and port == srv.port > 0
        c = Client(srv.address, connect_timeout=5, timeout=5)
        try:
            assert c.set("greeting", b"hello") is True
            assert c.get("greeting") == b"hello"
            assert c.incr("n", 1) is None
            c.set("n", b"41")
            assert c.incr("n", 1) == 42
        finally:
            c.close()
        st = srv.stats()
        assert st["curr_items"] == 2 and st["threads"] == 1
        assert st["limit_maxbytes"] == 64 << 20
    assert not srv.running
    with pytest.raises(OSError):
        socket.create_connection(srv.address, timeout=1).close()


def test_two_embedded_servers_are_independent():
    from pymemcache.client.base import Client
    with mpcache.Server(port=0, threads=1) as a, mpcache.Server(port=0, threads=2, memory_mb=8) as b:
        assert a.port != b.port
        ca, cb = Client(a.address, timeout=5), Client(b.address, timeout=5)
        try:
            ca.set("k", b"from-a")
            assert cb.get("k") is None
            cb.set("k", b"from-b")
            assert (ca.get("k"), cb.get("k")) == (b"from-a", b"from-b")
            a.stop()
            assert cb.get("k") == b"from-b", "stopping one leaves the other serving"
        finally:
            ca.close()
            cb.close()
        assert b.stats()["limit_maxbytes"] == 8 << 20


def test_embedded_unix_socket_and_errors(tmp_path):
    path = str(tmp_path / "emb.sock")
    with mpcache.Server(port=None, unix_socket=path) as srv:
        assert srv.address is None and srv.unix_socket == path
        assert call(path, b"version\r\n", family=socket.AF_UNIX) == b"VERSION 1.6.18\r\n"
    assert not os.path.exists(path)
    with pytest.raises(mpcache.ConfigError, match="Number of threads must be greater than 0"):
        mpcache.Server(port=0, threads=0)
    with pytest.raises(mpcache.ConfigError, match="1/2 of memory max"):
        mpcache.Server(port=0, memory_mb=1, max_item_size="1m")
    srv = mpcache.Server(port=0)
    srv.start()
    srv.stop()
    srv.stop()   # idempotent
    with pytest.raises(RuntimeError):
        srv.start()


def test_embedded_port_conflict_raises_listen_error():
    with mpcache.Server(port=0) as a:
        with pytest.raises(mpcache.ListenError, match="Address already in use"):
            mpcache.Server(port=a.port).start()
