"""metrics/: promtool accepts the scrape configuration and the rules, the
rules' logic holds on made-up series (alerts_test.yml), and the Grafana
dashboard is well formed.  That its metric names exist and its queries run
is checked against a live Prometheus in test_metrics_prometheus.py."""

import json
import os
import subprocess

import pytest

from tests.metrics.procs import ROOT, need

DASHBOARD = os.path.join(ROOT, "metrics", "grafana-dashboard.json")

HERE = os.path.dirname(os.path.abspath(__file__))


def promtool(*args):
    need("promtool")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_promtool_checks_the_scrape_config():
    r = promtool("check", "config", "metrics/prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    # it followed rule_files to alerts.yml
    assert "SUCCESS: 1 rule files found" in r.stdout


def test_promtool_checks_the_rules():
    r = promtool("check", "rules", "metrics/alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 9 rules found" in r.stdout


def test_rules_fire_as_intended():
    r = promtool("test", "rules", os.path.join(HERE, "alerts_test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_rule_test_can_fail(tmp_path):
    """The rule tests notice a changed threshold (so their SUCCESS means something)."""
    with open(os.path.join(ROOT, "metrics", "alerts.yml")) as f:
        rules = f.read()
    changed = rules.replace('[5m])) > 10\n', '[5m])) > 30\n')
    assert changed != rules
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "alerts.yml").write_text(changed)
    (tmp_path / "tests" / "metrics").mkdir(parents=True)
    with open(os.path.join(HERE, "alerts_test.yml")) as f:
        (tmp_path / "tests" / "metrics" / "alerts_test.yml").write_text(f.read())
    r = promtool("test", "rules", str(tmp_path / "tests" / "metrics" / "alerts_test.yml"))
    assert r.returncode == 1
    assert "alertname: MpcacheEvicting" in r.stdout + r.stderr


@pytest.fixture(scope="module")
def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def test_dashboard_is_well_formed(dashboard):
    assert dashboard["uid"] == "mpcache-overview" and dashboard["title"] == "mpcache"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["includeAll"] is True
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            # every query follows the instance picker
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


def test_dashboard_covers_what_the_issue_asks(dashboard):
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Hit ratio", "Operations by command", "Latency percentiles", "Memory",
            "Connections", "Requests per channel", "Batch size (events per loop turn)",
            "Accepts per listener partition", "System calls per request"} <= titles
