"""Where a request's server CPU goes: kernel TCP, kernel event machinery,
engine, store, locks.

    python -m bench.profile [--engine uring|epoll] [--threads N] [--seconds S]
                            [--workload get|churn-1|...] [--json FILE]

Starts mpcache pinned to CPU 0 (all of its channels there, as in the
t1-pinned arrangement unless --threads says more), drives it from CPU 1 with
bench/loadgen, samples the server with ``perf record -e cpu-clock`` (a
software clock: this machine has no hardware counters) and sorts every
sample into a bucket by its symbol:

  kernel-net      the kernel's TCP/IP, socket and loopback device code
  kernel-event    io_uring / epoll, system call entry, the scheduler, timers
  kernel-other    the rest of the kernel (memory management, interrupts, ...)
  engine          mpcache's C outside the store (channel, backends, parser,
                  executor, output buffers)
  store           ext/store/store.c, hash.c, slabs.c, evict.c
  locks           pthread mutexes and futexes
  memcached       memcached's own code (--server memcached)
  other           libc, the vDSO, Python (start-up leftovers)

The engine/store split comes from the function names defined in ext/**/*.c, so
it needs no debug information.  The figures are shares of the server's CPU;
multiplied by the CPU per request loadgen reports they give nanoseconds per
request per bucket (docs/SCALING.md uses them).
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from bench import compare

STORE_FILES = ("store.c", "hash.c", "slabs.c", "evict.c")
NET_WORDS = ("tcp", "inet", "ip_", "ipv4", "sock", "skb", "net_", "napi", "loopback", "dev_",
             "__dev", "dst_", "bbr", "sk_", "__sk", "neigh", "raw_v4", "csum", "qdisc", "validate_xmit",
             "__netif", "netif", "release_sock", "lock_sock", "__inet", "security_sock", "udp",
             "copy_to_iter", "_copy_from_iter", "__skb", "consume_skb", "kfree_skb", "__kfree_skb",
             "__release_sock", "rps_", "process_backlog", "__napi", "do_softirq", "__do_softirq",
             "__local_bh", "_raw_spin_unlock_bh", "_raw_spin_lock_bh", "skb_")
EVENT_WORDS = ("io_", "__io", "uring", "epoll", "ep_", "__ep", "syscall", "entry_SYSCALL", "do_syscall",
               "do_epoll", "sys_epoll", "finish_task_switch",
               "schedule", "__schedule", "finish_task_switch", "pick_next", "enqueue", "dequeue",
               "try_to_wake", "ttwu", "hrtimer", "timer", "__x64_sys", "x64_sys", "futex_wait",
               "update_curr", "psi_", "switch_mm", "__switch_to", "native_sched", "idle", "cpuidle",
               "irqentry", "exit_to_user", "syscall_exit", "arch_exit", "fput", "fget", "__fget",
               "task_work", "tctx_", "llist", "wake_up", "__wake_up", "autoremove_wake", "read_tsc",
               "ktime_get", "sched_", "__sched", "set_next", "put_prev")
LOCK_WORDS = ("pthread_mutex", "__lll_lock", "lll_", "futex", "__pthread_mutex")


def engine_functions():
    """function name -> 'store' or 'engine', from the definitions in ext/**/*.c."""
    kinds = {}
    define = re.compile(r"^(?:static\s+)?(?:inline\s+)?[\w\s\*]+?\b(\w+)\s*\([^;]*$")
    for path in glob.glob(os.path.join(compare.ROOT, "ext", "**", "*.c"), recursive=True):
        name = os.path.basename(path)
        if name in ("_engine.c", "parser_py.c"):
            continue
        kind = "store" if name in STORE_FILES else "engine"
        with open(path) as f:
            for line in f:
                m = define.match(line)
                if m and m.group(1) not in ("if", "while", "for", "switch", "return", "sizeof"):
                    kinds[m.group(1)] = kind
    return kinds


def _starts(name, words):
    return any(name.startswith(w) for w in words)


def bucket_of(dso, sym, kinds):
    base = sym.split(".")[0]
    if dso.startswith("["):
        if dso == "[vdso]":
            return "other"
        low = base.lower().lstrip("_")
        if "futex" in low:
            return "locks"
        # names match by prefix: "finish_task_switch" must not count as "sk_"
        if _starts(low, tuple(w.lstrip("_") for w in EVENT_WORDS)):
            return "kernel-event"
        if _starts(low, tuple(w.lstrip("_") for w in NET_WORDS)):
            return "kernel-net"
        return "kernel-other"
    if _starts(base, LOCK_WORDS):
        return "locks"
    if "_engine" in dso:
        return kinds.get(base, "engine")
    if dso == "memcached":
        return "memcached"
    return "other"


def perf_buckets(perf_data, kinds):
    out = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--stdio", "-g", "none",
                          "--sort", "dso,symbol", "--percent-limit", "0"],
                         capture_output=True, text=True).stdout
    buckets, top = {}, {}
    line_re = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(\S+)")
    for line in out.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        b = bucket_of(dso, sym, kinds)
        buckets[b] = buckets.get(b, 0.0) + pct
        top.setdefault(b, []).append((pct, sym))
    return buckets, {b: sorted(v, reverse=True)[:5] for b, v in top.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="uring", choices=("uring", "epoll"))
    ap.add_argument("--server", default=None, choices=sorted(compare.SERVERS),
                    help="profile this server instead (memcached: its own code counts as other)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workload", default="get")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    spec = compare.workloads()[args.workload]
    compare.build_loadgen()
    kinds = engine_functions()
    server_name = args.server or "mpcache-" + args.engine
    arrangement = dict(compare.ARRANGEMENTS["t1-pinned"], threads=args.threads, name="profile")
    port = compare.PortPool(compare.PORT_BASE + 700, 50).take()
    with compare.Server(server_name, port, spec.get("memory", 1024), arrangement) as srv, \
            tempfile.NamedTemporaryFile(suffix=".perf") as data:
        compare.preload(port, spec, arrangement)
        lg = subprocess.Popen(compare.taskset(arrangement["client_cpus"]) + [
            compare.LOADGEN, "-p", str(port), "--json", "--duration", str(args.seconds + 2), "--warmup", "0",
            "--server-pid", str(srv.pid)] + compare.run_args(spec), stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-p", str(srv.pid),
                        "-o", data.name, "--", "sleep", str(args.seconds)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = json.loads(lg.communicate()[0])
        buckets, top = perf_buckets(data.name, kinds)
    cpu_ns = report["server_cpu_us_per_request"] * 1000
    if args.workload.startswith("churn"):
        per = "connection"
        cpu_ns = report["server_cpu_us_per_conn"] * 1000
    else:
        per = "request"
    total = sum(buckets.values()) or 1.0
    result = {"workload": args.workload, "server": server_name, "threads": args.threads,
              "cpu_ns_per_" + per: cpu_ns, "requests_per_s": report["requests_per_s"],
              "share": {b: v / total for b, v in sorted(buckets.items())},
              "top": {b: [[p, s] for p, s in v] for b, v in top.items()}}
    print(f"{args.workload} on {server_name} -t {args.threads}: {cpu_ns:,.0f} ns of server CPU per {per}, "
          f"{report['requests_per_s']:,.0f} req/s")
    for b, share in sorted(result["share"].items(), key=lambda kv: -kv[1]):
        names = ", ".join(s for _, s in top[b][:3])
        print(f"  {b:<13} {share * 100:5.1f}%  {share * cpu_ns:7,.0f} ns   ({names})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
