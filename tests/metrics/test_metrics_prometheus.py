"""A real Prometheus (Debian's) scrapes two real mpcache processes with the
rules of metrics/alerts.yml loaded; the test asks its HTTP API.

  - memcached_up is 1 and the command counters equal the traffic sent;
  - every rule evaluates without error, and stopping one instance makes
    MpcacheDown pending for it;
  - every metric named in the rules and the Grafana dashboard is one a live
    scrape exposes, and every dashboard query is valid PromQL that returns
    data (those waiting for an engine accessor aside, see PENDING)."""

import json
import os
import re
import shutil
import tempfile

import pytest

from tests.metrics.procs import ROOT, Mpcache, Prometheus, http_get, need, send_traffic

ALERTS = os.path.join(ROOT, "metrics", "alerts.yml")
DASHBOARD = os.path.join(ROOT, "metrics", "grafana-dashboard.json")

# Series the kit uses that come from engine accessors mpcache/metrics.py reads
# when the engine has them (Engine.channel_stats, Engine.command_latency).
# While an accessor is missing its series may be absent; once it exists they
# must be there like every other.
PENDING = {
    "channel_stats": re.compile(r"^mpcache_channel_"),
    "command_latency": re.compile(r"^mpcache_command_duration_seconds"),
}

METRIC_TOKEN = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr):
    """Metric names in a PromQL expression (ours, and Prometheus' own `up`)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)      # not label values
    return {t for t in METRIC_TOKEN.findall(expr)
            if t.startswith(("memcached_", "mpcache_", "process_")) or t == "up"}


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            exprs.append((panel["title"], t["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append((var["name"], var["query"]["query"]))
    return exprs


def grafana_to_promql(expr):
    """Substitutes the dashboard's variables as Grafana would for all instances."""
    m = re.fullmatch(r"label_values\((.*), *(\w+)\)", expr)
    if m:
        expr = f"count by ({m.group(2)}) ({m.group(1)})"
    return (expr.replace("$__rate_interval", "1m").replace('"$job"', '"mpcache"')
            .replace('"$instance"', '".*"'))


def engine_has(accessor):
    from mpcache._engine import Engine
    return hasattr(Engine, accessor)


def pending(name):
    return any(p.match(name) and not engine_has(acc) for acc, p in PENDING.items())


@pytest.fixture(scope="module")
def stack():
    need("prometheus")
    workdir = tempfile.mkdtemp(prefix="mpcache-prom-")
    a = b = prom = None
    try:
        a = Mpcache(threads=2).start()
        b = Mpcache(threads=1).start()
        expected = send_traffic(a.addr)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [ALERTS],
            "scrape_configs": [{
                "job_name": "mpcache",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{a.metrics_port}"],
                                    "labels": {"role": "a"}},
                                   {"targets": [f"127.0.0.1:{b.metrics_port}"],
                                    "labels": {"role": "b"}}],
            }],
        }
        prom = Prometheus(config, workdir).start()
        # Two scrapes of each, so rate() over the dashboard's 1m has two points.
        prom.wait_for("two scrapes of both targets", lambda: len(prom.query(
            'count_over_time(memcached_up{job="mpcache"}[1m]) >= 2')) == 2)
        yield a, b, prom, expected
    finally:
        for p in (prom, a, b):
            if p is not None:
                p.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_prometheus_sees_up_and_the_traffic(stack):
    a, b, prom, expected = stack
    up = prom.query('memcached_up{job="mpcache"}')
    assert {dict(k)["role"]: v for k, v in up.items()} == {"a": 1.0, "b": 1.0}
    got = prom.query('memcached_commands_total{role="a"}')
    got = {(dict(k)["command"], dict(k)["status"]): v for k, v in got.items()}
    assert got == {k: float(v) for k, v in expected.items()}
    # Prometheus kept the exporter's names and types
    meta = prom.api("metadata", metric="memcached_uptime_seconds")
    assert meta["memcached_uptime_seconds"][0]["type"] == "counter"
    meta = prom.api("metadata", metric="memcached_commands_total")
    assert meta["memcached_commands_total"][0]["type"] == "counter"


def rules(prom):
    return [r for g in prom.api("rules")["groups"] for r in g["rules"]]


def test_every_rule_evaluates(stack):
    _, _, prom, _ = stack
    names = {r["name"] for r in rules(prom)}
    assert {"MpcacheDown", "MpcacheEvicting", "MpcacheHitRatioDrop",
            "MpcacheConnectionsNearLimit", "MpcacheConnectionsRejected",
            "MpcacheLatencyHigh"} <= names
    evaluated = prom.wait_for("every rule evaluated", lambda: all(
        r.get("lastEvaluation", "").startswith("20") for r in rules(prom)) and rules(prom))
    for r in evaluated:
        assert r["health"] == "ok", r
    # nothing is wrong with a healthy, idle pair
    assert prom.api("alerts")["alerts"] == []


def test_kit_names_are_exposed(stack):
    a, _, prom, _ = stack
    text = http_get(a.metrics_url)[2].decode()
    exposed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            exposed.add(line.split(" ")[2])
        elif line and not line.startswith("#"):
            exposed.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    exposed.add("up")   # Prometheus' own, per target
    used = {}
    for r in rules(prom):
        for n in metric_names(r["query"]):
            used.setdefault(n, []).append("rule " + r["name"])
    for where, expr in dashboard_exprs():
        for n in metric_names(expr):
            used.setdefault(n, []).append("panel " + where)
    assert len(used) > 20
    missing = {n: w for n, w in used.items() if n not in exposed}
    assert {n: w for n, w in missing.items() if not pending(n)} == {}


def test_dashboard_queries_run(stack):
    _, _, prom, _ = stack
    empty = []
    for where, expr in dashboard_exprs():
        q = grafana_to_promql(expr)
        result = prom.query(q)     # asserts the query is valid
        if not result and not any(pending(n) for n in metric_names(expr)):
            empty.append((where, q))
    assert empty == []


def test_stopped_instance_is_down(stack):
    _, b, prom, _ = stack
    assert b.stop() == 0
    pending_alerts = prom.wait_for("MpcacheDown for the stopped instance", lambda: [
        al for al in prom.api("alerts")["alerts"]
        if al["labels"]["alertname"] == "MpcacheDown"])
    assert [(al["labels"]["role"], al["state"]) for al in pending_alerts] == [("b", "pending")]
    up = prom.query('up{job="mpcache"}')
    assert {dict(k)["role"]: v for k, v in up.items()} == {"a": 1.0, "b": 0.0}
