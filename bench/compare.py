"""mpcache against memcached, side by side, on MegaPipe's axes.

    python -m bench.compare [--quick] [--arrangement A] [--rounds N] [--workloads a,b] [--json FILE]

For every workload, each server is started fresh, preloaded, and measured by
bench/loadgen, alternating servers A B A B for --rounds rounds, with the same
flags (``-t N -m 1024`` unless the workload says otherwise).  --arrangement
says how many channels (threads) both servers run and where the processes
may run (ARRANGEMENTS): ``t1-pinned``, the default, runs the server on CPU 0
and the load generator on CPU 1 (taskset), so on a 2-core machine each has a
core; ``t2-shared`` runs both servers at ``-t 2`` with nothing pinned, the
load generator sharing the CPUs as an application beside its cache does;
``t2-pinned`` gives the server two CPUs of its own and the load generator
the rest (it needs 3 CPUs or more).

The load generator is nearly saturated at memcached's speed, so a faster
server shows less in requests/s than in server CPU time per request, the
scheduler's runtime of every server thread (/proc/PID/task/TID/schedstat)
over exactly the measured window.  Both are reported, as
the median of the per-round ratios mpcache/memcached with the min-max over
the rounds (rounds are paired: round i of mpcache against round i of
memcached, which ran right before or after it).

System calls per request are counted once per workload per server, outside
the timed runs, by ``perf stat -e raw_syscalls:sys_enter -p PID`` (the same
tool for both servers; mpcache's own ``mpcache_syscalls`` counter is reported
beside it when the server has one).  ``--strace`` adds a per-call breakdown
from ``strace -c -f``, which slows the server tenfold, so only counts from it
mean anything.

The ``tls-`` workloads run both servers with ``-Z`` (a self-signed RSA-2048
certificate made here with the openssl CLI) and a plaintext ``notls:``
listener beside it, which preloads and reads ``stats``; bench/loadgen speaks
TLS on every measured connection (``--tls``), a full handshake per churn
connection.

Needs: gcc and make (to build loadgen), memcached, util-linux's taskset,
perf (Debian: ``apt-get install linux-perf``), optionally strace; for the
``tls-`` workloads openssl and OpenSSL's headers (libssl-dev).  Nothing
here needs Python packages beyond the standard library; bench/chart.py needs
matplotlib.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "loadgen")
HOST = "127.0.0.1"
# This suite's ports; other engineers' tests use other ranges.
PORT_BASE = 25100
PORT_SPAN = 800
# name -> threads of both servers, the CPUs of the server and of the load
# generator (None: wherever the scheduler puts them), the CPUs it needs
ARRANGEMENTS = {
    "t1-pinned": {"threads": 1, "server_cpus": "0", "client_cpus": "1", "min_cpus": 2,
                  "desc": "-t 1, the server pinned to CPU 0 and bench/loadgen to CPU 1"},
    "t2-shared": {"threads": 2, "server_cpus": None, "client_cpus": None, "min_cpus": 2,
                  "desc": "-t 2, nothing pinned: server and bench/loadgen share the CPUs"},
    "t2-pinned": {"threads": 2, "server_cpus": "0,1", "client_cpus": "2-", "min_cpus": 3,
                  "desc": "-t 2, the server on CPUs 0-1 and bench/loadgen on the others"},
}
# A server that does not accept connections after this long is broken.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

# ---------------------------------------------------------------- servers


def _root_flags():
    # memcached refuses to run as root without -u; mpcache takes the flag too.
    return ["-u", "root"] if os.geteuid() == 0 else []


SERVERS = {
    "memcached": {"argv": ["memcached"], "env": {}},
    # memcached against itself: an A/A run shows the noise floor of the ratios.
    "memcached-aa": {"argv": ["memcached"], "env": {}},
    "mpcache": {"argv": [sys.executable, "-m", "mpcache"], "env": {}},
    "mpcache-epoll": {"argv": [sys.executable, "-m", "mpcache"], "env": {"MPCACHE_IO_ENGINE": "epoll"}},
    "mpcache-uring": {"argv": [sys.executable, "-m", "mpcache"], "env": {"MPCACHE_IO_ENGINE": "uring"}},
    # channel i pinned to CPU i, as the daemon did by default before
    # mpcache's default -t on a 2-CPU machine, whatever the arrangement's
    "mpcache-uring-t1": {"argv": [sys.executable, "-m", "mpcache"], "env": {"MPCACHE_IO_ENGINE": "uring"},
                         "threads": 1},
    "mpcache-uring-pin": {"argv": [sys.executable, "-m", "mpcache", "--pin-channels"],
                          "env": {"MPCACHE_IO_ENGINE": "uring"}},
}
REFERENCE = "memcached"


def server_command(name, port, memory_mb, threads=1, plain_port=None):
    """plain_port: -Z on port, and a plaintext notls: listener on plain_port."""
    spec = SERVERS[name]
    tls = []
    if plain_port:
        crt, key = tls_certificate()
        tls = ["-Z", "-o", f"ssl_chain_cert={crt},ssl_key={key}", "-l", f"notls:{HOST}:{plain_port}"]
    return spec["argv"] + [
        "-p", str(port), "-l", HOST, "-U", "0", "-t", str(spec.get("threads", threads)), "-m", str(memory_mb),
    ] + _root_flags() + tls


_certificate = None


def tls_certificate():
    """(certificate, key): one self-signed RSA-2048 pair per run, as a
    server's usual certificate."""
    global _certificate
    if _certificate is None:
        d = tempfile.mkdtemp(prefix="bench-tls-")
        crt, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={HOST}", "-keyout", key, "-out", crt],
                       check=True, capture_output=True)
        _certificate = (crt, key)
    return _certificate


def _port_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class PortPool:
    def __init__(self, base, span):
        self.base, self.span, self.next = base, span, 0

    def take(self):
        for _ in range(self.span):
            port = self.base + self.next
            self.next = (self.next + 1) % self.span
            if _port_free(port) and not _port_open(port):
                return port
        raise RuntimeError(f"no free port in {self.base}..{self.base + self.span}")


def taskset(cpus):
    """The command prefix that runs a program on `cpus` (nothing for None)."""
    return ["taskset", "-c", cpus] if cpus else []


class Server:
    """One server process, on the arrangement's CPUs, listening on 127.0.0.1:port."""

    def __init__(self, name, port, memory_mb, arrangement, plain_port=None):
        self.name, self.port = name, port
        # with TLS (plain_port), stats and preloading go to the plaintext listener
        self.plain_port = plain_port or port
        self.cmd = taskset(arrangement["server_cpus"]) + server_command(
            name, port, memory_mb, arrangement["threads"], plain_port)
        env = dict(os.environ)
        env.update(SERVERS[name]["env"])
        root = SERVERS[name].get("root", ROOT)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.log = tempfile.TemporaryFile()
        # taskset execs the server: the pid is the server's own, for /proc/PID/task
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=root)
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start: {' '.join(self.cmd)}\n{self.output()}")
            time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def info(self):
        """version and, for mpcache, the I/O engine actually in use (uring may fall back to epoll)."""
        want = ("version", "libevent", "mpcache_io_engine", "mpcache_channels", "threads")
        out = {}
        try:
            # mpcache's own lines are in "stats mpcache" (memcached: ERROR)
            for cmd in (b"stats\r\n", b"stats mpcache\r\n"):
                with socket.create_connection((HOST, self.plain_port), timeout=2) as s:
                    s.sendall(cmd)
                    buf = b""
                    while not buf.endswith((b"END\r\n", b"ERROR\r\n")):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                for line in buf.decode(errors="replace").split("\r\n"):
                    f = line.split(" ", 2)
                    if len(f) == 3 and f[0] == "STAT" and f[1] in want:
                        out[f[1]] = f[2]
        except OSError as e:
            out["error"] = str(e)
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def server_available(name):
    argv0 = SERVERS[name]["argv"][0]
    if argv0 == sys.executable:
        probe = subprocess.run([sys.executable, "-c", "import mpcache.cli"], cwd=ROOT,
                               capture_output=True, env=dict(os.environ, PYTHONPATH=ROOT))
        return probe.returncode == 0
    return shutil.which(argv0) is not None


# ---------------------------------------------------------------- workloads

CHURN_R = [1, 2, 4, 8, 16, 32, 64, 128]
VALUE_SIZES = [1, 32, 1024, 4096, 16384]


def workloads():
    """name -> {args: loadgen arguments, memory: -m, preload, axis for the chart}."""
    w = {}
    base = ["--keys", "10000"]
    w["get"] = {"args": base + ["--conns", "50", "--value-size", "32"], "preload": True,
                "desc": "persistent get, 50 connections, 32 B values"}
    w["pipeline-16"] = {"args": base + ["--conns", "20", "--depth", "16"], "preload": True,
                        "desc": "persistent get pipelined 16 deep, 20 connections"}
    w["multiget-10"] = {"args": base + ["--conns", "20", "--mget", "10"], "preload": True,
                        "desc": "persistent 10-key get, 20 connections"}
    for r in CHURN_R:
        w[f"churn-{r}"] = {"args": base + ["--conns", "20", "--reqs-per-conn", str(r)], "preload": True,
                           "desc": f"connect, {r} get(s), close; 20 slots over 16 source addresses",
                           "axis": ("reqs_per_conn", r)}
    w["set-heavy"] = {"args": base + ["--conns", "50", "--get-ratio", "0.1"], "preload": True,
                      "desc": "90% set, 10% get, persistent, 50 connections"}
    for v in VALUE_SIZES:
        w[f"value-{v}"] = {"args": base + ["--conns", "50", "--value-size", str(v)], "preload": True,
                           "desc": f"persistent get of {v} B values", "axis": ("value_size", v)}
    # Values large enough to be sent from their items by reference; 1000
    # keys keep the data set (128 MB) inside -m.
    w["value-131072"] = {"args": ["--keys", "1000", "--conns", "20", "--value-size", "131072"],
                         "preload": True, "desc": "persistent get of 128 KiB values, 20 connections"}
    # TLS (-Z): the same persistent get and churn-1, every connection over TLS
    w["tls-get"] = {"args": base + ["--conns", "50", "--value-size", "32"], "preload": True, "tls": True,
                    "desc": "persistent get over TLS, 50 connections, 32 B values"}
    w["tls-churn-1"] = {"args": base + ["--conns", "20", "--reqs-per-conn", "1"], "preload": True,
                        "tls": True, "desc": "TLS connect (full handshake), 1 get, close; 20 slots"}
    # Key space about ten times what -m 64 holds at this value size.
    w["hitratio-m64"] = {"args": ["--keys", "1000000", "--value-size", "512", "--zipf", "0.99",
                                  "--conns", "50", "--fill-on-miss"],
                         "preload": False, "memory": 64, "warmup_min": 3.0,
                         "desc": "Zipf(0.99) gets over 1M keys of 512 B, set on miss, -m 64"}
    return w


QUICK_WORKLOADS = ["get", "pipeline-16", "multiget-10", "churn-1", "churn-8", "churn-128", "set-heavy",
                   "value-1", "value-4096", "value-16384", "value-131072", "hitratio-m64",
                   "tls-get", "tls-churn-1"]

# ---------------------------------------------------------------- running


def loadgen(port, args, arrangement, pid=None, duration=None, warmup=None, stats=False, label=""):
    cmd = taskset(arrangement["client_cpus"]) + [LOADGEN, "-p", str(port), "--json", "--label", label] + list(args)
    if duration is not None:
        cmd += ["--duration", str(duration)]
    if warmup is not None:
        cmd += ["--warmup", str(warmup)]
    if pid:
        cmd += ["--server-pid", str(pid)]
    if stats:
        cmd += ["--stats"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        out = None
    if p.returncode != 0 or out is None or out.get("errors"):
        raise RuntimeError(f"loadgen failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return out


def preload(server, spec, arrangement):
    if spec.get("preload"):
        loadgen(server.plain_port, spec["args"] + ["--preload-only"], arrangement, label="preload")


def run_args(spec, server):
    # A miss after the preload is an error (the key space fits in -m).
    tls = ["--tls", "--stats-port", str(server.plain_port)] if spec.get("tls") else []
    return spec["args"] + (["--preloaded"] if spec.get("preload") else []) + tls


def start_server(name, ports, spec, arrangement):
    plain = ports.take() if spec.get("tls") else None
    return Server(name, ports.take(), spec.get("memory", 1024), arrangement, plain_port=plain)


def measure_syscalls(server, spec, arrangement, seconds, use_strace):
    """System calls per request, by perf (and strace -c if asked), outside the timed runs."""
    result = {}
    perf = shutil.which("perf")
    if perf:
        with tempfile.NamedTemporaryFile("r", suffix=".perf") as out:
            pp = subprocess.Popen([perf, "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", str(server.pid),
                                   "-o", out.name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.3)  # perf attaches
            try:
                lg = loadgen(server.port, run_args(spec, server), arrangement, duration=seconds, warmup=0,
                             label="syscalls")
            finally:
                pp.send_signal(signal.SIGINT)
                pp.wait(10)
            count = None
            for line in out.read().splitlines():
                fields = line.split(",")
                if len(fields) > 2 and "raw_syscalls:sys_enter" in line and fields[0].strip().isdigit():
                    count = int(fields[0])
            if count is not None:
                tot = lg["total"]
                result["perf_syscalls"] = count
                result["perf_per_request"] = count / max(tot["requests"], 1)
                if tot["conns_done"]:
                    result["perf_per_conn"] = count / tot["conns_done"]
            else:
                result["perf_error"] = pp.stderr.read().decode(errors="replace")[-500:] if pp.stderr else "no count"
    if use_strace and shutil.which("strace"):
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            sp = subprocess.Popen(["strace", "-c", "-f", "-p", str(server.pid), "-o", out.name],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            try:
                lg = loadgen(server.port, run_args(spec, server), arrangement, duration=min(seconds, 1.0),
                             warmup=0, label="strace")
            finally:
                sp.send_signal(signal.SIGINT)
                sp.wait(10)
            calls = {}
            for line in out.read().splitlines():
                f = line.split()
                if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
                    try:
                        calls[f[-1]] = int(f[3])
                    except ValueError:
                        pass
            n = max(lg["total"]["requests"], 1)
            result["strace_per_request"] = {k: v / n for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    return result


def one_run(name, ports, spec, arrangement, duration, warmup):
    with start_server(name, ports, spec, arrangement) as srv:
        info = srv.info()
        preload(srv, spec, arrangement)
        # the hit-ratio workload must fill the cache before it is measured
        w = max(warmup, spec.get("warmup_min", 0))
        out = loadgen(srv.port, run_args(spec, srv), arrangement, pid=srv.pid, duration=duration, warmup=w,
                      stats=True, label=name)
    out["server_info"] = info
    return slim(out)


# Server stats kept in the JSON (the rest of `stats` would only bloat it).
KEEP_STATS = ("cmd_get", "cmd_set", "get_hits", "get_misses", "evictions", "total_connections",
              "bytes_read", "bytes_written", "rusage_user", "rusage_system")


def slim(out):
    d = out.get("server_stats_delta")
    if d:
        out["server_stats_delta"] = {k: v for k, v in d.items()
                                     if k in KEEP_STATS or k.startswith(("mpcache_", "channels:"))}
    return out


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def summarize_run(r):
    """The numbers the table compares, from one loadgen report."""
    d = r.get("server_stats_delta") or {}
    s = {
        "requests_per_s": r["requests_per_s"],
        "conns_per_s": r["conns_per_s"],
        "cpu_us_per_request": r["server_cpu_us_per_request"],
        "cpu_us_per_conn": r["server_cpu_us_per_conn"],
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
        "p999_us": r["latency_us"]["p999"],
        "hit_ratio": r["hit_ratio"],
        "client_busy": r["client_busy"],
    }
    if "mpcache_syscalls" in d and r["requests"]:
        s["counter_syscalls_per_request"] = d["mpcache_syscalls"] / r["requests"]
    return s


METRICS = [
    # key, label, better when
    ("requests_per_s", "req/s", "higher"),
    ("cpu_us_per_request", "CPU us/req", "lower"),
    ("p99_us", "p99 us", "lower"),
]


def ratio_stats(a_runs, b_runs, key):
    ratios = [a[key] / b[key] for a, b in zip(a_runs, b_runs)
              if a.get(key) is not None and b.get(key) not in (None, 0)]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def machine_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mc = subprocess.run(["memcached", "-V"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("memcached") else None
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "model": model, "kernel": platform.release(), "memcached": mc,
            "commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# ---------------------------------------------------------------- table


def fmt_ratio(st):
    if not st:
        return "n/a"
    return f"{st['median']:.2f} ({st['min']:.2f}-{st['max']:.2f})"


def fmt_num(v, nd=0):
    if v is None:
        return "n/a"
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def table_rows(result, engine):
    """Rows of the ratio table for one mpcache engine against the reference."""
    rows = []
    for wl in result["workloads"]:
        runs = wl["runs"]
        if engine not in runs or REFERENCE not in runs:
            continue
        a, b = runs[engine], runs[REFERENCE]
        sa, sb = wl["syscalls"].get(engine, {}), wl["syscalls"].get(REFERENCE, {})
        row = {
            "workload": wl["name"],
            "ref_rps": median_of(b, "requests_per_s"),
            "rps": ratio_stats(a, b, "requests_per_s"),
            "ref_cpu": median_of(b, "cpu_us_per_request"),
            "cpu": ratio_stats(a, b, "cpu_us_per_request"),
            "ref_p99": median_of(b, "p99_us"),
            "p99": ratio_stats(a, b, "p99_us"),
            "ref_sys": sb.get("perf_per_request"),
            "sys": sa.get("perf_per_request"),
            "sys_counter": median_of(a, "counter_syscalls_per_request"),
            "hit_ref": median_of(b, "hit_ratio") if wl["name"].startswith("hitratio") else None,
            "hit": median_of(a, "hit_ratio") if wl["name"].startswith("hitratio") else None,
        }
        rows.append(row)
    return rows


def markdown_table(result, engine):
    head = ("| workload | memcached req/s | req/s ratio | memcached CPU µs/req | CPU/req ratio | "
            "memcached p99 µs | p99 ratio | syscalls/req memcached | syscalls/req mpcache (perf; counters) |")
    lines = [head, "|" + " --- |" * 9]
    for r in table_rows(result, engine):
        sys_m = fmt_num(r["sys"], 2)
        if r["sys_counter"] is not None:
            sys_m += f"; {r['sys_counter']:.2f}"
        name = r["workload"]
        if r["hit_ref"] is not None:
            name += f" (hit ratio {r['hit']:.4f} vs {r['hit_ref']:.4f})" if r["hit"] is not None else ""
        lines.append(f"| {name} | {fmt_num(r['ref_rps'])} | {fmt_ratio(r['rps'])} | {fmt_num(r['ref_cpu'], 2)} | "
                     f"{fmt_ratio(r['cpu'])} | {fmt_num(r['ref_p99'], 0)} | {fmt_ratio(r['p99'])} | "
                     f"{fmt_num(r['ref_sys'], 2)} | {sys_m} |")
    return "\n".join(lines)


def text_table(result, engine):
    out = [f"{engine} / {REFERENCE}: median ratio (min-max over {result['config']['rounds']} rounds)",
           f"{'workload':<14} {'memc req/s':>11} {'req/s':>18} {'memc us/req':>11} {'CPU/req':>18} "
           f"{'memc p99':>9} {'p99':>18} {'sys/req memc':>12} {'mpcache':>8} {'counters':>8}"]
    for r in table_rows(result, engine):
        out.append(f"{r['workload']:<14} {fmt_num(r['ref_rps']):>11} {fmt_ratio(r['rps']):>18} "
                   f"{fmt_num(r['ref_cpu'], 2):>11} {fmt_ratio(r['cpu']):>18} {fmt_num(r['ref_p99']):>9} "
                   f"{fmt_ratio(r['p99']):>18} {fmt_num(r['ref_sys'], 2):>12} {fmt_num(r['sys'], 2):>8} "
                   f"{fmt_num(r['sys_counter'], 2):>8}")
        if r["hit_ref"] is not None:
            out.append(f"{'':<14} hit ratio: {REFERENCE} {fmt_num(r['hit_ref'], 4)}, {engine} {fmt_num(r['hit'], 4)}")
    return "\n".join(out)


# ---------------------------------------------------------------- main


def build_loadgen():
    r = subprocess.run(["make", "-s", "-C", HERE, "loadgen"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"building bench/loadgen failed:\n{r.stdout}{r.stderr}")


def check_tools(need_perf, arrangement):
    missing = [t for t in ("taskset", "memcached") if not shutil.which(t)]
    if need_perf and not shutil.which("perf"):
        print("note: perf not found (apt-get install linux-perf): no system-call counts", file=sys.stderr)
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (apt-get install util-linux memcached)")
    ncpu = len(os.sched_getaffinity(0))
    if ncpu < arrangement["min_cpus"]:
        sys.exit(f"this arrangement needs {arrangement['min_cpus']} CPUs; this machine allows {ncpu}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, fewer workloads (about 4 minutes)")
    ap.add_argument("--arrangement", default="t1-pinned", choices=sorted(ARRANGEMENTS),
                    help="channels of both servers and CPU placement (default: t1-pinned)")
    ap.add_argument("--rounds", type=int, default=None, help="A B rounds per workload (3)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run (5; quick 1)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (1; quick 0.3)")
    ap.add_argument("--workloads", default=None, help="comma-separated workload names (default: all)")
    ap.add_argument("--servers", default=None,
                    help="comma-separated servers, memcached first (default: memcached and mpcache if it imports)")
    ap.add_argument("--no-syscalls", action="store_true", help="skip the perf system-call counts")
    ap.add_argument("--strace", action="store_true", help="also a per-call breakdown by strace -c -f")
    ap.add_argument("--baseline", default=None, metavar="DIR",
                    help="an older mpcache checkout, built in place: adds the servers baseline-uring and "
                         "baseline-epoll, so a change is measured against it in the same run")
    ap.add_argument("--port-base", type=int, default=PORT_BASE)
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    ap.add_argument("--list", action="store_true", help="list workloads and exit")
    args = ap.parse_args(argv)

    if args.baseline:
        for engine in ("uring", "epoll"):
            SERVERS["baseline-" + engine] = dict(SERVERS["mpcache-" + engine], root=os.path.abspath(args.baseline))
    wls = workloads()
    if args.list:
        for n, s in wls.items():
            print(f"{n:<14} {s['desc']}")
        return 0
    rounds = args.rounds or 3
    duration = args.duration or (1.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    names = args.workloads.split(",") if args.workloads else (QUICK_WORKLOADS if args.quick else list(wls))
    unknown = [n for n in names if n not in wls]
    if unknown:
        sys.exit(f"unknown workloads {unknown}; --list shows them")
    if args.servers:
        servers = args.servers.split(",")
        for s in servers:
            if s not in SERVERS:
                sys.exit(f"unknown server {s}; known: {list(SERVERS)}")
    else:
        servers = [REFERENCE] + (["mpcache-epoll", "mpcache-uring"] if server_available("mpcache") else [])
        if len(servers) == 1:
            print("note: mpcache does not import here; measuring memcached alone", file=sys.stderr)
    arrangement = dict(ARRANGEMENTS[args.arrangement], name=args.arrangement)
    if (arrangement["client_cpus"] or "").endswith("-"):   # "the rest": up to the last CPU
        arrangement["client_cpus"] += str(max(os.sched_getaffinity(0)))
    check_tools(not args.no_syscalls, arrangement)
    build_loadgen()
    ports = PortPool(args.port_base, PORT_SPAN)

    result = {
        "machine": machine_info(),
        "command": "python -m bench.compare " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {"rounds": rounds, "duration": duration, "warmup": warmup, "servers": servers,
                   "arrangement": arrangement,
                   "server_flags": f"-t {arrangement['threads']} -m 1024 -U 0 (hit ratio: -m 64)"},
        "workloads": [],
    }
    result["machine"]["loadavg_start"] = loadavg()
    t_start = time.monotonic()
    for name in names:
        spec = wls[name]
        wl = {"name": name, "desc": spec["desc"], "memory": spec.get("memory", 1024),
              "args": spec["args"] + (["--preloaded"] if spec.get("preload") else [])
              + (["--tls"] if spec.get("tls") else []),
              "axis": spec.get("axis"), "runs": {s: [] for s in servers}, "raw": {s: [] for s in servers},
              "syscalls": {}}
        for rnd in range(rounds):
            # A B A B ...; the order flips every round so neither server always goes first.
            order = servers if rnd % 2 == 0 else list(reversed(servers))
            for s in order:
                out = one_run(s, ports, spec, arrangement, duration, warmup)
                wl["raw"][s].append(out)
                wl["runs"][s].append(summarize_run(out))
                print(f"  {name:<14} round {rnd + 1} {s:<14} {out['requests_per_s']:>10,.0f} req/s  "
                      f"cpu {fmt_num(out['server_cpu_us_per_request'], 2):>6} us/req  "
                      f"p99 {out['latency_us']['p99']:>8.1f} us  client {out['client_busy'] * 100:.0f}%",
                      file=sys.stderr, flush=True)
        if not args.no_syscalls:
            for s in servers:
                with start_server(s, ports, spec, arrangement) as srv:
                    preload(srv, spec, arrangement)
                    wl["syscalls"][s] = measure_syscalls(srv, spec, arrangement, min(duration, 2.0), args.strace)
        result["workloads"].append(wl)
        for s in servers:
            if wl["raw"][s]:
                result.setdefault("server_info", {})[s] = wl["raw"][s][0].get("server_info", {})
    result["elapsed_s"] = time.monotonic() - t_start
    result["machine"]["loadavg_end"] = loadavg()

    for engine in servers:
        if engine == REFERENCE:
            continue
        print(text_table(result, engine))
        print()
    if servers == [REFERENCE]:
        for wl in result["workloads"]:
            r = wl["runs"][REFERENCE]
            sc = wl["syscalls"].get(REFERENCE, {})
            print(f"{wl['name']:<14} {fmt_num(median_of(r, 'requests_per_s')):>10} req/s  "
                  f"{fmt_num(median_of(r, 'cpu_us_per_request'), 2):>6} us/req  "
                  f"p99 {fmt_num(median_of(r, 'p99_us'), 0):>6} us  syscalls/req {fmt_num(sc.get('perf_per_request'), 2)}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"results: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
