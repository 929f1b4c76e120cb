"""Real processes for the metrics and deployment tests: mpcache with
--metrics-listen, Prometheus, nutcracker.

Every port comes from this suite's range (PORT_RANGE), probed free before
use, and every process listens on 127.0.0.1 only.  A process that does not
come up fails the test with its command line and output; every process is
killed at the latest when the session ends.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from pymemcache.client.base import Client

from tests.support import servers

HOST = "127.0.0.1"
PORT_RANGE = (26000, 27000)     # the metrics and deployment suites' ports
START_TIMEOUT = 30.0            # Prometheus takes a few seconds to open its TSDB
STOP_TIMEOUT = 10.0

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def need(tool):
    """Skips without the program, except in CI, whose .ci/run installs it."""
    if shutil.which(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")


def free_port():
    return servers.free_port(PORT_RANGE)


class Proc:
    """A child process whose output goes to a temporary file."""

    name = "process"

    def __init__(self, cmd, env=None, cwd=ROOT):
        self.cmd = [str(c) for c in cmd]
        self.env = env
        self.cwd = cwd
        self.proc = None
        self._out = None

    def spawn(self):
        self._out = servers.capture_file()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._out, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        servers.track(self.proc)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        return servers.captured_output(self._out)

    def describe(self):
        return f"command: {' '.join(self.cmd)}\noutput:\n{self.output()}"

    def wait_until(self, ready, what):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.alive():
                raise AssertionError(f"{self.name} exited with status {self.proc.returncode} "
                                     f"before {what}\n{self.describe()}")
            try:
                if ready():
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} within {START_TIMEOUT}s\n"
                                     f"{self.describe()}")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        servers.untrack(self.proc)
        return self.proc.returncode

    def close(self):
        self.stop()
        if self._out is not None:
            self._out.close()
            self._out = None


def memcached_version_ok(addr):
    with socket.create_connection(addr, timeout=1.0) as s:
        s.sendall(b"version\r\n")
        return s.recv(64).startswith(b"VERSION ")


class Mpcache(Proc):
    """`python -m mpcache` on a port of the range, with /metrics on another
    unless metrics=False."""

    name = "mpcache"

    def __init__(self, threads=2, memory_mb=64, metrics=True, extra=()):
        self.port = free_port()
        self.metrics_port = free_port() if metrics else None
        cmd = [sys.executable, "-m", "mpcache", "-p", self.port, "-l", HOST, "-U", "0",
               "-t", threads, "-m", memory_mb]
        if self.metrics_port:
            cmd += ["--metrics-listen", f"{HOST}:{self.metrics_port}"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        super().__init__(cmd + list(extra), env)

    @property
    def addr(self):
        return (HOST, self.port)

    @property
    def metrics_url(self):
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def start(self):
        self.spawn()
        self.wait_until(lambda: memcached_version_ok(self.addr), "answer to version")
        if self.metrics_port:
            self.wait_until(lambda: http_get(self.metrics_url)[0] == 200, "/metrics")
        return self


def http_get(url, headers=None, timeout=5.0):
    """(status, headers, body) of a GET; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Prometheus(Proc):
    """Debian's prometheus on a port of the range, with a configuration
    written to a temporary directory that also holds its storage."""

    name = "prometheus"

    def __init__(self, config, workdir):
        self.port = free_port()
        self.workdir = workdir
        path = os.path.join(workdir, "prometheus.yml")
        with open(path, "w") as f:
            json.dump(config, f, indent=1)   # JSON is YAML
        super().__init__(["prometheus", f"--config.file={path}",
                          f"--storage.tsdb.path={os.path.join(workdir, 'data')}",
                          f"--web.listen-address={HOST}:{self.port}",
                          "--log.level=warn"])

    @property
    def url(self):
        return f"http://{HOST}:{self.port}"

    def start(self):
        self.spawn()
        return self.wait_until(lambda: http_get(self.url + "/-/ready")[0] == 200, "readiness")

    def api(self, path, **params):
        query = urllib.parse.urlencode(params)
        status, _, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", (path, params, reply)
        return reply["data"]

    def query(self, expr):
        """Instant vector as {frozenset(labels): float}."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}

    def wait_for(self, what, check, timeout=20.0):
        """Polls check() until it returns a true value, which it returns."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            if not self.alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"prometheus: {what} not seen within {timeout}s (last: {last!r})\n"
                             f"{self.describe()}")


class Nutcracker(Proc):
    """twemproxy in front of servers, ketama distribution, on ports of the range."""

    name = "nutcracker"

    def __init__(self, servers, workdir, auto_eject=True):
        self.port = free_port()
        self.stats_port = free_port()
        lines = [
            "mpcache:",
            f"  listen: {HOST}:{self.port}",
            "  hash: fnv1a_64",
            "  distribution: ketama",
            "  timeout: 2000",
            "  preconnect: true",
            f"  auto_eject_hosts: {'true' if auto_eject else 'false'}",
            # Ejected after one failure, not retried during the test: the
            # dead server's keys go to the survivors at once and stay there.
            "  server_failure_limit: 1",
            "  server_retry_timeout: 60000",
            "  servers:",
        ]
        lines += [f"    - {h}:{p}:1 mpc{i}" for i, (h, p) in enumerate(servers)]
        self.conf = os.path.join(workdir, "nutcracker.yml")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        super().__init__(["nutcracker", "-c", self.conf, "-a", HOST, "-s", self.stats_port,
                          "-v", "4"])

    @property
    def addr(self):
        return (HOST, self.port)

    def start(self):
        self.spawn()
        return self.wait_until(lambda: _connects(self.addr), "listening socket")


def _connects(addr):
    with socket.create_connection(addr, timeout=1.0):
        return True


def send_traffic(addr):
    """A fixed mix of requests; returns what memcached_commands_total must say."""
    c = Client(addr, default_noreply=False, connect_timeout=5, timeout=5)
    try:
        assert c.flush_all() is True
        for i in range(40):
            # three value sizes, so three slab classes hold items
            assert c.set(f"k{i}", b"v" * (10, 500, 5000)[i % 3]) is True
        for i in range(25):
            assert c.get(f"k{i}") is not None
        for i in range(15):
            assert c.get(f"absent{i}") is None
        for i in range(5):
            assert c.delete(f"k{30 + i}") is True
        for i in range(2):
            assert c.delete(f"absent{i}") is False
        assert c.set("ctr", b"10") is True
        for _ in range(3):
            c.incr("ctr", 1)
        assert c.incr("nope", 1) is None
        for _ in range(2):
            c.decr("ctr", 1)
        assert c.decr("nope", 1) is None
        assert c.touch("k0", 100) is True
        assert c.touch("k1", 100) is True
        assert c.touch("absent", 100) is False
        _, cas = c.gets("k2")
        assert c.cas("k2", b"new", cas) is True            # hit
        assert c.cas("k2", b"newer", cas) is False         # badval: token is stale
        assert c.cas("absent", b"x", b"1") is None         # miss
    finally:
        c.close()
    return {
        ("get", "hit"): 25 + 1, ("get", "miss"): 15,        # + the gets
        ("delete", "hit"): 5, ("delete", "miss"): 2,
        ("incr", "hit"): 3, ("incr", "miss"): 1,
        ("decr", "hit"): 2, ("decr", "miss"): 1,
        ("touch", "hit"): 2, ("touch", "miss"): 1,
        ("cas", "hit"): 1, ("cas", "miss"): 1, ("cas", "badval"): 1,
        ("flush", "hit"): 1,
        ("set", "hit"): 41,                                 # cmd_set less the cas requests
    }
