"""deploy/grafana: the dashboards are what build_dashboards.py generates, are well-formed Grafana
dashboard JSON, use the provisioned datasource, and name only metrics the services define (the
end-to-end test then runs every expression through a real Prometheus). Grafana itself cannot be
installed here (not in Debian, PyPI or npm): its consumption of the files is not exercised."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "tools"))
import deploytools as dt

GRAFANA = dt.DEPLOY / "grafana"
DASHBOARDS = dt.load_dashboards()
KNOWN_PANELS = {"timeseries", "stat", "row", "gauge", "bargauge", "table", "text", "heatmap"}


def test_dashboards_are_generated_from_the_code() -> None:
    done = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_four_dashboards_exist() -> None:
    assert set(DASHBOARDS) == {"overview.json", "matcher.json", "tuner.json", "gateway.json"}
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert dashboard["schemaVersion"] >= 36 and dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids, cells = set(), set()
    for panel in dashboard["panels"]:
        assert panel["type"] in KNOWN_PANELS, panel["type"]
        assert panel["id"] not in ids
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for dx in range(grid["w"]):
            for dy in range(grid["h"]):
                cell = (grid["x"] + dx, grid["y"] + dy)
                assert cell not in cells, f"{name}: panel {panel['title']!r} overlaps another"
                cells.add(cell)
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{name}: {panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids)
        for target in panel["targets"]:
            for var in re.findall(r"\$\{?(\w+)", target["expr"]):
                assert var.startswith("__") or var in variables, f"{name}: unknown variable ${var}"


def test_required_panels() -> None:
    def titles(name: str) -> str:
        return " | ".join(p["title"].lower() for p in DASHBOARDS[name]["panels"])

    overview = titles("overview.json")
    for words in (
        "requests",
        "optimized share",
        "match rate",
        "optimized vs passed through",
        "reloads by cause",
        "truncations prevented",
        "kv memory",
        "prompt time",
        "benefit",
    ):
        assert words in overview, words
    for words in ("rps", "latency", "cache", "templates"):
        assert words in titles("matcher.json"), words
    for words in ("recommendations", "learning", "outcomes", "flush"):
        assert words in titles("tuner.json"), words
    for words in ("latency by model", "time to first token", "tokens/s", "num_batch", "benefit"):
        assert words in titles("gateway.json"), words


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_name_only_declared_metrics(name: str) -> None:
    declared, missing = dt.declared_metric_names()
    assert not missing, f"metric modules not importable: {missing}"
    for title, expr in dt.grafana_exprs(DASHBOARDS[name]):
        unknown = dt.metric_names(expr) - declared - dt.SYNTHETIC
        assert not unknown, f"{name} / {title}: {unknown} not defined by the services ({expr})"


def test_provisioning() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus" and source["isDefault"]
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/ollama-optimizer.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/var/lib/grafana/dashboards")
    for dashboard in DASHBOARDS.values():
        assert dashboard["templating"]["list"][0]["current"]["value"] == source["uid"]


def test_metric_name_extraction() -> None:
    """The PromQL scan used above (no PromQL parser on PyPI that knows Prometheus 2.x fully)."""
    expr = (
        "histogram_quantile(0.95, sum by (le, model) "
        '(rate(foo_seconds_bucket{model=~"$model", a="b(c)"}[$__rate_interval])))'
        ' / on (job) group_left sum without (instance) (bar_total offset 5m) > bool 3 or absent(up{job="x"})'
    )
    assert dt.metric_names(expr) == {"foo_seconds_bucket", "bar_total", "up"}
    assert dt.grafana_to_promql('rate(x{m=~"$model"}[$__rate_interval])') == 'rate(x{m=~".*"}[1m])'
