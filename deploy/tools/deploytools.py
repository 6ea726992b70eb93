"""Helpers for the deploy tests (tests/test_deploy_*.py): where the external tools are, renders by the
real `kubectl kustomize` and `helm`, and PromQL helpers shared by the Prometheus and Grafana checks.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

TOOLS = Path(__file__).resolve().parent
DEPLOY = TOOLS.parent
REPO = DEPLOY.parent
COMPOSE_SCHEMA = TOOLS / ".cache" / "npm" / "node_modules" / "dclint" / "schemas" / "compose.schema.json"
DCLINT = TOOLS / ".cache" / "npm" / "node_modules" / ".bin" / "dclint"
BIN = TOOLS / ".cache" / "bin"
# The oldest Kubernetes this repo supports (native gRPC probes GA 1.27, preStop sleep 1.30) and the
# newest schema kubernetes-validate ships at its pinned version.
K8S_VERSIONS = ("1.30.0", "1.37.0")


# --- tools -----------------------------------------------------------------------------------------
@functools.cache
def install_tools() -> str:
    """Run install-tools.sh once per test session (idempotent, never fatal); returns what it said."""
    try:
        done = subprocess.run(["bash", str(TOOLS / "install-tools.sh")], capture_output=True, text=True, timeout=540)
        return done.stdout + done.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"install-tools.sh did not finish: {exc}"


def which(name: str) -> str | None:
    """Path of ``name`` on PATH, running install-tools.sh first when it is missing."""
    found = shutil.which(name)
    if found is None:
        install_tools()
        found = shutil.which(name)
    return found


def compose_schema() -> Path | None:
    if not COMPOSE_SCHEMA.is_file():
        install_tools()
    return COMPOSE_SCHEMA if COMPOSE_SCHEMA.is_file() else None


def skip(reason: str) -> None:
    """pytest.skip, with the reason also printed (pytest -q hides skip reasons without -rs)."""
    import pytest

    print(f"\nSKIPPED (tool unavailable): {reason}", file=sys.__stderr__, flush=True)
    pytest.skip(reason)


def missing_reason(tool: str) -> str:
    said = [line for line in install_tools().splitlines() if tool.split()[0] in line]
    return f"{tool} is not installed and install-tools.sh could not install it: " + (
        " ".join(said) or "(it said nothing)"
    )


# --- kubectl kustomize and helm ---------------------------------------------------------------------
def k8s_tool(name: str) -> str | None:
    """``kubectl`` or ``helm`` as install-tools.sh puts them in .cache/bin (pinned versions), installing
    them first when they are missing; None when that failed (missing_reason says why)."""
    path = BIN / name
    if not path.is_file():
        install_tools()
    return str(path) if path.is_file() else None


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{what} failed:\n{done.stderr}")
    return done.stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k directory` would apply, rendered by the real `kubectl kustomize`."""
    kubectl = k8s_tool("kubectl")
    assert kubectl is not None, missing_reason("kubectl")
    return load_docs(_run([kubectl, "kustomize", str(directory)], f"kubectl kustomize {directory}"))


def helm(*args: str) -> str:
    """Output of the real ``helm`` with ``args``; AssertionError with helm's message when it fails."""
    binary = k8s_tool("helm")
    assert binary is not None, missing_reason("helm")
    return _run([binary, *args], "helm " + " ".join(args))


def helm_template(chart: Path, namespace: str, *args: str) -> list[dict[str, Any]]:
    """What `helm install` would apply (release name ``ollama-optimizer``), from the real `helm template`."""
    return load_docs(helm("template", "ollama-optimizer", str(chart), "--namespace", namespace, *args))


def by_identity(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    ident = {}
    for doc in docs:
        meta = doc["metadata"]
        ident[(doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return ident


# --- PromQL ----------------------------------------------------------------------------------------
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
    "atan2",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels, keywords and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables outside matchers
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def grafana_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every Prometheus query of a dashboard, rows' panels and variables included."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((panel.get("title", ""), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") == "query" and isinstance(query, dict) and query.get("query"):
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"])
            if m:
                out.append((f"variable {var['name']}", m.group(1)))
    return out


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    """A dashboard query as Prometheus sees it once Grafana has filled in its variables (all values)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    expr = expr.replace("$__range", "1h")
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", ".*", expr)


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))}


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += group["rules"]
    return rules


# --- what the services declare ----------------------------------------------------------------------
METRIC_MODULES = (
    "ollama_optimizer.grpc_interceptors",
    "matcher_service.metrics",
    "tuner_service.metrics",
    "proxy_plugin.metrics",
)
SYNTHETIC = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_series_added",
    "scrape_samples_post_metric_relabeling",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "untyped": ("",),
}


def declared_metric_names() -> tuple[set[str], list[str]]:
    """Sample names the project's metric modules define (importable ones), and the modules missing."""
    import importlib

    from prometheus_client import REGISTRY

    registries, missing = [REGISTRY], []
    for module in METRIC_MODULES:
        try:
            imported = importlib.import_module(module)
        except ImportError:
            missing.append(module)
            continue
        registry = getattr(imported, "REGISTRY", None)
        if registry is not None and registry not in registries:
            registries.append(registry)
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names, missing
