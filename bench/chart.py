"""Chart and BENCHMARKS.md from a bench/compare.py JSON result.

    python -m bench.chart bench/results/latest.json --png bench/results/throughput.png --markdown BENCHMARKS.md \
        [--more bench/results/t2-shared.json ...]

The PNG has throughput (and server CPU per request) against requests per
connection (MegaPipe's churn axis) and against value size, one line per
server: the median over the rounds, with the min-max as error bars.

Each --more result (another --arrangement of compare.py, such as -t 2 on
shared CPUs) adds a section with its ratio tables and a bar chart of the
ratios beside the main PNG.

BENCHMARKS.md is written whole, except the hand-written notes between the
``<!-- notes -->`` and ``<!-- /notes -->`` markers, which are kept.
"""

import argparse
import os
import re
import statistics
import sys

try:
    from bench import compare
except ImportError:  # run as a script: python bench/chart.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench import compare

NOTES_START, NOTES_END = "<!-- notes -->", "<!-- /notes -->"
DEFAULT_NOTES = ("(Hand-written notes go here: where a target is missed, by how much, and what the "
                 "profile shows. This block survives regeneration.)")

# The targets: (workload or None for all, metric, ratio bound, sense)
TARGETS = [
    ("churn-1", "cpu_us_per_request", 0.67, "le", "server CPU per request, churn-1"),
    ("get", "cpu_us_per_request", 0.9, "le", "server CPU per request, persistent get"),
    ("pipeline-16", "cpu_us_per_request", 0.5, "le", "server CPU per request, pipelined get"),
    ("tls-get", "cpu_us_per_request", 0.9, "le", "server CPU per request, persistent get over TLS"),
    ("tls-churn-1", "cpu_us_per_request", 0.9, "le", "server CPU per request, churn-1 over TLS"),
    (None, "requests_per_s", 1.0, "ge", "requests/s on every workload"),
    (None, "p99_us", 1.0, "le", "p99 on every workload"),
    (None, "syscalls", 0.25, "le", "system calls per request on every workload"),
    ("hitratio-m64", "hit_ratio", 1.0, "ge", "hit ratio at -m 64"),
]


def arrangement_of(result):
    """The run's arrangement (threads, CPUs); results from before
    --arrangement existed were all -t 1 pinned."""
    cfg = result["config"]
    if "arrangement" in cfg:
        return cfg["arrangement"]
    return dict(compare.ARRANGEMENTS["t1-pinned"], name="t1-pinned",
                server_cpus=cfg.get("server_cpu", "0"), client_cpus=cfg.get("client_cpu", "1"))


def placement_text(arr):
    where = lambda cpus: f"CPU {cpus}" if cpus else "any CPU"  # noqa: E731
    return f"-t {arr['threads']}, server on {where(arr['server_cpus'])}, load generator on {where(arr['client_cpus'])}"


def series(result, axis_name, server, key):
    xs, med, lo, hi = [], [], [], []
    for wl in result["workloads"]:
        axis = wl.get("axis")
        if not axis or axis[0] != axis_name or server not in wl["runs"]:
            continue
        vals = [r[key] for r in wl["runs"][server] if r.get(key) is not None]
        if not vals:
            continue
        m = statistics.median(vals)
        xs.append(axis[1])
        med.append(m)
        lo.append(m - min(vals))
        hi.append(max(vals) - m)
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    return ([xs[i] for i in order], [med[i] for i in order], [lo[i] for i in order], [hi[i] for i in order])


def draw(result, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = result["config"]["servers"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    panels = [
        (axes[0][0], "reqs_per_conn", "requests_per_s", "requests per connection", "requests/s"),
        (axes[0][1], "value_size", "requests_per_s", "value size (bytes)", "requests/s"),
        (axes[1][0], "reqs_per_conn", "cpu_us_per_request", "requests per connection", "server CPU µs / request"),
        (axes[1][1], "value_size", "cpu_us_per_request", "value size (bytes)", "server CPU µs / request"),
    ]
    for ax, axis_name, key, xlabel, ylabel in panels:
        ticks = set()
        for s in servers:
            xs, med, lo, hi = series(result, axis_name, s, key)
            if xs:
                ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=s)
                ticks.update(xs)
        ax.set_xscale("log", base=2)
        if ticks:
            ax.set_xticks(sorted(ticks))
            ax.set_xticklabels([f"{t:g}" if t < 1024 else f"{t / 1024:g}K" for t in sorted(ticks)])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend()
    m = result["machine"]
    fig.suptitle(f"mpcache vs memcached, {placement_text(arrangement_of(result))}\n"
                 f"{m['model']}, {m['nproc']} CPUs, Linux {m['kernel']}, {m['date']}, "
                 f"median of {result['config']['rounds']} rounds (bars: min-max)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def draw_ratios(result, png):
    """One bar per workload and mpcache server: its req/s and CPU per
    request as ratios to memcached (medians, bars min-max)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = [e for e in result["config"]["servers"] if e != compare.REFERENCE]
    names = [wl["name"] for wl in result["workloads"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(len(engines), 1)
    for ax, key, label in ((axes[0], "requests_per_s", "req/s ÷ memcached (higher is better)"),
                           (axes[1], "cpu_us_per_request", "server CPU per request ÷ memcached (lower is better)")):
        for k, e in enumerate(engines):
            med, lo, hi = [], [], []
            for wl in result["workloads"]:
                st = compare.ratio_stats(wl["runs"].get(e, []), wl["runs"].get(compare.REFERENCE, []), key)
                m = st["median"] if st else 0
                med.append(m)
                lo.append(m - st["min"] if st else 0)
                hi.append(st["max"] - m if st else 0)
            xs = [i + (k - (len(engines) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=e)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"mpcache / memcached, {placement_text(arrangement_of(result))}\n"
                 f"{m['nproc']} CPUs, Linux {m['kernel']}, {m['date']}, "
                 f"median of {result['config']['rounds']} rounds (bars: min-max)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def target_rows(result, engine):
    rows = []
    wls = {wl["name"]: wl for wl in result["workloads"]}
    for wname, metric, bound, sense, label in TARGETS:
        names = [wname] if wname else list(wls)
        worst, worst_name = None, None
        for n in names:
            wl = wls.get(n)
            if not wl or engine not in wl["runs"] or compare.REFERENCE not in wl["runs"]:
                continue
            if metric == "syscalls":
                a = wl["syscalls"].get(engine, {}).get("perf_per_request")
                b = wl["syscalls"].get(compare.REFERENCE, {}).get("perf_per_request")
                r = a / b if a is not None and b else None
            else:
                st = compare.ratio_stats(wl["runs"][engine], wl["runs"][compare.REFERENCE], metric)
                r = st["median"] if st else None
            if r is None:
                continue
            if worst is None or (r > worst if sense == "le" else r < worst):
                worst, worst_name = r, n
        if worst is None:
            rows.append(f"| {label} | {'≤' if sense == 'le' else '≥'} {bound} | not measured | |")
            continue
        ok = worst <= bound if sense == "le" else worst >= bound
        where = f" ({worst_name})" if not wname else ""
        verdict = "met" if ok else f"missed by {abs(worst / bound - 1) * 100:.1f}%"
        rows.append(f"| {label} | {'≤' if sense == 'le' else '≥'} {bound} | {worst:.3f}{where} | {verdict} |")
    return rows


def baseline_table(result):
    ref = compare.REFERENCE
    lines = ["| workload | req/s | conns/s | server CPU µs/req | p50 µs | p99 µs | p99.9 µs | syscalls/req | "
             "client busy |", "|" + " --- |" * 9]
    for wl in result["workloads"]:
        runs = wl["runs"].get(ref)
        if not runs:
            continue
        sc = wl["syscalls"].get(ref, {})
        med = lambda k: compare.median_of(runs, k)  # noqa: E731
        name = wl["name"] + (f" (hit ratio {med('hit_ratio'):.4f})" if wl["name"].startswith("hitratio") else "")
        cps = med("conns_per_s")
        lines.append(f"| {name} | {compare.fmt_num(med('requests_per_s'))} | "
                     f"{compare.fmt_num(cps) if cps else ''} | {compare.fmt_num(med('cpu_us_per_request'), 2)} | "
                     f"{compare.fmt_num(med('p50_us'))} | {compare.fmt_num(med('p99_us'))} | "
                     f"{compare.fmt_num(med('p999_us'))} | {compare.fmt_num(sc.get('perf_per_request'), 2)} | "
                     f"{compare.fmt_num(med('client_busy') * 100 if med('client_busy') is not None else None)}% |")
    return "\n".join(lines)


def workload_list(result):
    lines = ["| workload | what | loadgen arguments | -m |", "| --- | --- | --- | --- |"]
    for wl in result["workloads"]:
        lines.append(f"| {wl['name']} | {wl['desc']} | `{' '.join(wl['args'])}` | {wl['memory']} |")
    return "\n".join(lines)


def arrangement_section(result, png_rel):
    """A section for a result of another arrangement (--more)."""
    arr = arrangement_of(result)
    cfg, m = result["config"], result["machine"]
    engines = [s for s in cfg["servers"] if s != compare.REFERENCE]
    out = [
        f"## {arr['desc']}",
        "",
        f"    {result['command']}",
        "",
        f"Both servers at `{cfg['server_flags']}`, {placement_text(arr)}; {cfg['rounds']} rounds, servers "
        f"alternating, {cfg['duration']} s measured after {cfg['warmup']} s of warm-up; commit {m['commit']}, "
        f"{m['date']}, load average {m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end. "
        f"Total time {result.get('elapsed_s', 0) / 60:.1f} min.",
        "",
        f"![req/s and server CPU per request against memcached, {arr['desc']}]({png_rel})",
        "",
    ]
    for e in engines:
        out += [f"### {e} / memcached", "", compare.markdown_table(result, e), ""]
    return out


def markdown(result, png_rel, old_notes, more=(), hitmatrix=None):
    m, cfg = result["machine"], result["config"]
    engines = [s for s in cfg["servers"] if s != compare.REFERENCE]
    out = [
        "# Benchmarks: mpcache against memcached",
        "",
        "Generated by `make -C bench report` (which runs `python -m bench.compare` and then "
        "`python -m bench.chart`); do not edit by hand except between the notes markers. "
        "`make -C bench report COMPARE_ARGS=--quick` is the four-minute version.",
        "",
        "## Machine",
        "",
        f"- CPUs: {m['nproc']} × {m['model']}",
        f"- kernel: Linux {m['kernel']}",
        f"- reference: {m['memcached']}",
        f"- mpcache commit: {m['commit']}",
        *[f"- {s}: " + ", ".join(f"{k} {v}" for k, v in sorted(info.items()))
          for s, info in result.get("server_info", {}).items()],
        f"- date: {m['date']}",
        f"- load average (1, 5, 15 min) at start: {m.get('loadavg_start')}, at end: {m.get('loadavg_end')} "
        "(other work on the machine widens the min–max)",
        "",
        "## Command",
        "",
        f"    {result['command']}",
        "",
        f"{cfg['rounds']} rounds per workload, servers alternating A B A B (the order flips each round), "
        f"{cfg['duration']} s measured after {cfg['warmup']} s of warm-up, a fresh server per run with "
        f"`{cfg['server_flags']}`, {placement_text(arrangement_of(result))}. "
        f"Total time {result.get('elapsed_s', 0) / 60:.1f} min.",
        "",
    ]
    for e in engines:
        out += [
            f"## {e} / memcached",
            "",
            "Median of the per-round ratios, min–max over the rounds in brackets. Below 1 is better for CPU, p99 "
            "and system calls; above 1 is better for requests/s. System calls per request are counted by "
            "`perf stat -e raw_syscalls:sys_enter -p PID` over a separate untimed run (all threads, so idle "
            "housekeeping threads count too), and for mpcache also from its `mpcache_syscalls` counter.",
            "",
            compare.markdown_table(result, e),
            "",
            "### Targets (from issue 4)",
            "",
            "| target | ratio | worst measured | verdict |",
            "| --- | --- | --- | --- |",
            *target_rows(result, e),
            "",
        ]
    for extra, extra_png in more:
        out += arrangement_section(extra, extra_png)
    out += [
        "## memcached alone",
        "",
        "Medians of the reference runs, for scale. *Client busy* is the load generator's CPU use over the window: "
        "near 100% means the client, not the server, set the pace, and the CPU-per-request column is the one "
        "to read.",
        "",
        baseline_table(result),
        "",
    ]
    if hitmatrix is not None:
        out += hitmatrix_section(hitmatrix)
    out += [
        "## Chart",
        "",
        f"![throughput and server CPU per request against requests per connection and value size]({png_rel})",
        "",
        "## Workloads",
        "",
        workload_list(result),
        "",
        "## Method notes",
        "",
        "- Every reply is validated by bench/loadgen (values are a function of the key, checked byte for byte; "
        "a miss on a preloaded key, a wrong or late reply, or a closed connection is an error), and any error "
        "fails the run, so no number here comes from a run that served wrong data.",
        "- Churn workloads connect, send R gets one at a time, and close with an ordinary `close()` (FIN), as "
        "pymemcache and libmemcached do. Closing with `SO_LINGER` 0 (RST, `loadgen --linger0`) is cheaper for "
        "the server (memcached: about 37 instead of 45 µs per connection) but adds a failing `read` "
        "(ECONNRESET) and is not what real clients do. Connections are spread over the source addresses "
        "127.0.0.1–127.0.0.16 with `IP_BIND_ADDRESS_NO_PORT`, so ephemeral ports do not run out.",
        "- Server CPU time is the scheduler's runtime of every server thread "
        "(`/proc/PID/task/TID/schedstat`, nanoseconds) over exactly the measured window. utime+stime "
        "from `/proc/PID/stat` is sampled at the tick (4 ms here) and charged a server that sleeps "
        "in short bursts inconsistently.",
        "- Other work on the machine during a run shows up as spread in the min–max; the A B A B order keeps "
        "it from favouring one server.",
        "",
        "## Notes",
        "",
        NOTES_START,
        old_notes or DEFAULT_NOTES,
        NOTES_END,
        "",
    ]
    return "\n".join(out)


def hitmatrix_section(hm):
    """BENCHMARKS.md's section from bench/hitmatrix.py's JSON."""
    from bench import hitmatrix
    servers = hm["servers"]
    return [
        "## What a cache holds and how often it hits",
        "",
        f"`make -C bench hitmatrix` (bench/hitmatrix.py, seed {hm['seed']}"
        + (", --quick" if hm.get("quick") else "") + "): both servers at `-t 2`, each cell on fresh "
        "servers, the same seeded request sequence; cache-aside cells count the gets of the second "
        "half. A busy machine slows a cell but hardly moves its figures; the servers' own timers "
        "(maintenance, memcached's LRU threads) do, by up to about 0.02 in a hit ratio between runs.",
        "",
        hitmatrix.markdown(hm, servers[1], servers[0]),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description="chart and BENCHMARKS.md from compare.py's JSON")
    ap.add_argument("json")
    ap.add_argument("--png", default=os.path.join(compare.HERE, "results", "throughput.png"))
    ap.add_argument("--markdown", default=None, help="write BENCHMARKS.md here")
    ap.add_argument("--hitmatrix", default=None, help="bench/hitmatrix.py's JSON: a section of its own")
    ap.add_argument("--more", nargs="*", default=[],
                    help="results of other arrangements, each a section with its own chart")
    args = ap.parse_args(argv)
    import json
    with open(args.json) as f:
        result = json.load(f)
    draw(result, args.png)
    print(f"chart: {args.png}", file=sys.stderr)
    more = []
    for path in args.more:
        with open(path) as f:
            extra = json.load(f)
        png = os.path.join(os.path.dirname(os.path.abspath(args.png)),
                           f"ratios-{arrangement_of(extra)['name']}.png")
        draw_ratios(extra, png)
        print(f"chart: {png}", file=sys.stderr)
        more.append((extra, png))
    if args.markdown:
        old_notes = None
        if os.path.exists(args.markdown):
            text = open(args.markdown).read()
            mt = re.search(re.escape(NOTES_START) + r"\n(.*?)\n" + re.escape(NOTES_END), text, re.S)
            if mt:
                old_notes = mt.group(1)
        here = os.path.dirname(os.path.abspath(args.markdown))
        png_rel = os.path.relpath(os.path.abspath(args.png), here)
        more_rel = [(extra, os.path.relpath(png, here)) for extra, png in more]
        with open(args.markdown, "w") as f:
            hm = None
            if args.hitmatrix:
                with open(args.hitmatrix) as f2:
                    hm = json.load(f2)
            f.write(markdown(result, png_rel, old_notes, more_rel, hm))
        print(f"report: {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
