"""deploy/prometheus with promtool (Debian's `prometheus` package): `promtool check config`,
`promtool check rules`, `promtool test rules`; and every alert is tested and names only metrics the
services define."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "tools"))
import deploytools as dt

PROM = dt.DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = dt.which("promtool")
    if path is None:
        dt.skip(dt.missing_reason("promtool"))
    return path


def _run(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=120)


def test_check_config_compose(promtool: str) -> None:
    done = _run(promtool, "check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_config_kubernetes(promtool: str, tmp_path: Path) -> None:
    done = _run(promtool, "check", "config", "prometheus-kubernetes.yml")
    if done.returncode != 0 and "field kubernetes_sd_configs not found" in done.stdout + done.stderr:
        # Debian builds Prometheus without the Kubernetes service discovery: check everything else
        # (relabel regexes, rule files) with the discovery block swapped for an empty static one.
        config = yaml.safe_load((PROM / "prometheus-kubernetes.yml").read_text())
        for job in config["scrape_configs"]:
            job.pop("kubernetes_sd_configs")
            job["static_configs"] = [{"targets": []}]
        config["rule_files"] = [str(PROM / r) for r in config["rule_files"]]
        copy = tmp_path / "prometheus-kubernetes.yml"
        copy.write_text(yaml.safe_dump(config))
        done = _run(promtool, "check", "config", str(copy), cwd=tmp_path)
        print(
            "\nthis promtool has no kubernetes_sd_configs (Debian build): checked the rest of "
            "prometheus-kubernetes.yml with a static discovery block",
            file=sys.__stderr__,
        )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_check_rules(promtool: str, rules: Path) -> None:
    done = _run(promtool, "check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("tests", TEST_FILES, ids=lambda p: p.name)
def test_rule_unit_tests(promtool: str, tests: Path) -> None:
    done = _run(promtool, "test", "rules", str(tests), cwd=tests.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    alerts = {r["alert"] for r in dt.alert_rules() if "alert" in r}
    fired, quiet = set(), set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fired == set(), "alerts never shown firing in a unit test"
    assert alerts - quiet == set(), "alerts never shown staying quiet in a unit test"
    assert fired <= alerts, "tests name alerts that do not exist"


def test_the_required_alerts_exist() -> None:
    alerts = {r["alert"] for r in dt.alert_rules() if "alert" in r}
    # service down, fail-open rate high, truncations detected, reload storm, Postgres errors, telemetry drops
    assert {
        "OptimizerServiceDown",
        "OptimizerGatewayDown",
        "OptimizerFailOpenRateHigh",
        "OptimizerTruncationsDetected",
        "ModelReloadStorm",
        "OptimizerPostgresErrors",
        "OptimizerTelemetryDropped",
    } <= alerts


def test_alerts_are_actionable() -> None:
    for rule in dt.alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_alerts_name_only_declared_metrics() -> None:
    declared, missing = dt.declared_metric_names()
    assert not missing, f"metric modules not importable: {missing}"
    for rule in dt.alert_rules():
        unknown = dt.metric_names(rule["expr"]) - declared - dt.SYNTHETIC
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown} are not defined by the services"
