"""Smoke test of bench/loadgen: it runs, reports, and refuses wrong replies.

A few seconds against memcached (and mpcache, when it starts), every mode
once, checking the JSON report is complete and consistent.  Then loadgen
against tiny Python servers that answer wrongly in one way each: every one of
them must make loadgen exit 1 with the error counted, while the same server
answering correctly passes, so a failure here is the wrong reply's doing.

Speed is never asserted.  Ports come from the benchmark's range (25000-25099;
bench/compare.py uses 25100 and up).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench")
LOADGEN = os.path.join(BENCH, "loadgen")
HOST = "127.0.0.1"
PORTS = range(25000, 25100)
START_TIMEOUT = 15.0


def _free_port():
    for port in PORTS:
        s = socket.socket()
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        try:
            socket.create_connection((HOST, port), timeout=0.1).close()
        except OSError:
            return port
    raise RuntimeError("no free port in 25000-25099")


@pytest.fixture(scope="module")
def loadgen():
    r = subprocess.run(["make", "-s", "-C", BENCH, "loadgen"], capture_output=True, text=True)
    assert r.returncode == 0, f"building loadgen failed:\n{r.stdout}{r.stderr}"
    return LOADGEN


def run_loadgen(port, *args, expect_rc=0, timeout=60):
    cmd = [LOADGEN, "-p", str(port), "--json", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == expect_rc, f"{' '.join(cmd)} exited {p.returncode}, wanted {expect_rc}\n{p.stderr}"
    report = json.loads(p.stdout)
    return report, p.stderr


# ---------------------------------------------------------------- real servers


class ServerProc:
    def __init__(self, argv, env=None):
        self.port = _free_port()
        cmd = argv + ["-p", str(self.port), "-l", HOST, "-U", "0", "-t", "1", "-m", "64"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    out = self.proc.stdout.read().decode(errors="replace")
                    pytest.fail(f"server did not start: {' '.join(cmd)}\n{out}")
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _mpcache_runs():
    if not os.path.exists(os.path.join(ROOT, "mpcache", "cli.py")):
        return False
    r = subprocess.run([sys.executable, "-c", "import mpcache.cli"], cwd=ROOT, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    return r.returncode == 0


SERVERS = {
    "memcached": (["memcached"], None),
    "mpcache": ([sys.executable, "-m", "mpcache"], None),
}


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request):
    name = request.param
    argv, env = SERVERS[name]
    if name == "memcached" and not shutil.which("memcached"):
        pytest.skip("memcached is not installed (apt-get install memcached)")
    if name == "mpcache" and not _mpcache_runs():
        pytest.skip("mpcache does not import yet")
    srv = ServerProc(argv, env)
    yield srv
    srv.stop()


MODES = {
    "persistent": ["--conns", "4", "--preload"],
    "pipeline": ["--conns", "2", "--depth", "8", "--preload"],
    "multiget": ["--conns", "2", "--mget", "10", "--preload", "--zipf", "0.9"],
    "churn": ["--conns", "4", "--reqs-per-conn", "2", "--preload"],
    "set-mix": ["--conns", "4", "--get-ratio", "0.5", "--value-size", "4096", "--preload"],
    "hitratio": ["--conns", "4", "--fill-on-miss", "--zipf", "1.0", "--keys", "100000"],
}


@pytest.mark.parametrize("mode", list(MODES))
def test_modes_report(loadgen, server, mode):
    # each mode its own keys: the server is shared, and values differ in size between modes
    report, stderr = run_loadgen(server.port, "--keys", "2000", *MODES[mode], "--key-prefix", f"{mode}:",
                                 "--duration", "0.4",
                                 "--warmup", "0.1", "--server-pid", server.proc.pid, "--stats",
                                 "--label", mode)
    assert report["errors"] == 0, stderr
    assert report["label"] == mode
    assert report["requests"] > 0
    assert report["requests"] == report["gets"] + report["sets"]
    assert report["latency_us"]["count"] == report["requests"]
    lat = report["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert report["server_cpu_s"] is not None and report["server_cpu_s"] >= 0
    assert report["server_stats_delta"] is not None
    keys_per_get = report["config"]["mget"]
    assert report["hits"] + report["misses"] == report["gets"] * keys_per_get
    if mode == "hitratio":
        assert report["misses"] > 0 and report["fills"] > 0
        assert report["fills"] <= report["misses"] + report["config"]["conns"]
    else:
        # every key was preloaded: misses would have been errors
        assert report["misses"] == 0 and report["hits"] > 0
    if mode == "churn":
        assert report["conns"] > 0
        assert report["requests"] >= 2 * report["conns"] - 2 * report["config"]["conns"]
    if mode == "set-mix":
        assert report["sets"] > 0 and report["gets"] > 0
    # the server agrees on what was asked of it
    d = report["server_stats_delta"]
    if "cmd_get" in d:
        assert d["cmd_get"] >= report["gets"] * keys_per_get * 0.9


def test_text_report(loadgen, server):
    p = subprocess.run([LOADGEN, "-p", str(server.port), "--conns", "2", "--duration", "0.2", "--warmup", "0",
                        "--preload", "--keys", "100"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "requests" in p.stdout and "latency us" in p.stdout and "errors      0" in p.stdout


def test_usage_errors(loadgen):
    for args in ([], ["-p", "1", "--value-size", "0"], ["-p", "1", "--get-ratio", "2"],
                 ["-p", "1", "--fill-on-miss", "--depth", "4"]):
        p = subprocess.run([LOADGEN, *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.stderr)


def test_connection_refused_fails(loadgen):
    port = _free_port()   # nothing listens there
    report, stderr = run_loadgen(port, "--conns", "2", "--duration", "0.2", "--warmup", "0", expect_rc=1)
    assert report["errors"] > 0
    assert "Connection refused" in stderr


# ---------------------------------------------------------------- lying servers


class FakeServer:
    """A memcached look-alike, correct or wrong in one chosen way.

    It learns each key's value from the sets it receives (loadgen's values are
    its own function of the key), and answers gets from that: so the correct
    mode passes loadgen's checks, and each fault mode breaks exactly one.
    """

    def __init__(self, fault):
        self.fault = fault
        self.store = {}
        self.lock = threading.Lock()
        self.port = _free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, self.port))
        self.sock.listen(64)
        self.stopping = False
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _reply_get(self, keys):
        out = []
        for k in keys:
            with self.lock:
                item = self.store.get(k)
            if item is None:
                continue
            flags, data = item
            if self.fault == "wrong-value":
                data = data[:-1] + (b"X" if data[-1:] != b"X" else b"Y")
            elif self.fault == "wrong-flags":
                flags += 1
            elif self.fault == "wrong-length":
                data = data + b"Z"
            elif self.fault == "wrong-key":
                k = k + b"x"
            elif self.fault == "miss":
                continue
            out.append(b"VALUE %s %d %d\r\n%s\r\n" % (k, flags, len(data), data))
        if self.fault == "no-end":
            return b"".join(out)
        return b"".join(out) + b"END\r\n"

    def _serve(self, conn):
        buf = b""
        served = 0
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                out = []
                while b"\r\n" in buf:
                    line, rest = buf.split(b"\r\n", 1)
                    parts = line.split(b" ")
                    if parts[0] == b"set":
                        n = int(parts[4])
                        if len(rest) < n + 2:
                            break
                        data, buf = rest[:n], rest[n + 2:]
                        with self.lock:
                            self.store[parts[1]] = (int(parts[2]), data)
                        out.append(b"NOT_STORED\r\n" if self.fault == "not-stored" else b"STORED\r\n")
                    elif parts[0] == b"get":
                        buf = rest
                        served += 1
                        if self.fault == "silent":
                            continue
                        if self.fault == "close" and served > 5:
                            conn.close()
                            return
                        if self.fault == "garbage":
                            out.append(b"HELLO THERE\r\n")
                            continue
                        if self.fault == "extra":
                            out.append(self._reply_get(parts[1:]) + b"END\r\n")
                            continue
                        out.append(self._reply_get(parts[1:]))
                    else:
                        buf = rest
                        out.append(b"ERROR\r\n")
                if out:
                    conn.sendall(b"".join(out))
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def fake(request):
    servers = []

    def make(fault):
        s = FakeServer(fault)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


FAKE_ARGS = ["--conns", "2", "--keys", "50", "--duration", "0.3", "--warmup", "0", "--timeout", "1",
             "--preload"]


def test_fake_server_correct_passes(loadgen, fake):
    """The control: the fake server, answering right, passes every mode used below."""
    srv = fake("none")
    for extra in ([], ["--mget", "5"], ["--get-ratio", "0.5"]):
        report, stderr = run_loadgen(srv.port, *FAKE_ARGS, *extra)
        assert report["errors"] == 0, stderr
        assert report["requests"] > 0 and report["misses"] == 0


@pytest.mark.parametrize("fault,message", [
    ("wrong-value", "wrong value data"),
    ("wrong-flags", "expected flags"),
    ("wrong-length", "expected flags"),
    ("wrong-key", "not requested"),
    ("miss", "miss on a preloaded key"),
    ("garbage", "expected VALUE or END"),
    ("extra", "nobody asked for"),
    ("not-stored", "expected STORED"),
    ("silent", "no reply within"),
    ("no-end", "no reply within"),
    ("close", "server closed the connection"),
])
def test_wrong_replies_fail_the_run(loadgen, fake, fault, message):
    srv = fake(fault)
    report, stderr = run_loadgen(srv.port, *FAKE_ARGS, expect_rc=1)
    assert report.get("errors", 0) > 0, stderr
    assert message in stderr, stderr
    assert "not valid" in stderr or report.get("mode") == "preload"


def test_wrong_value_in_multiget_fails(loadgen, fake):
    srv = fake("wrong-value")
    report, stderr = run_loadgen(srv.port, *FAKE_ARGS, "--mget", "5", expect_rc=1)
    assert report["errors"] > 0 and "wrong value data" in stderr
