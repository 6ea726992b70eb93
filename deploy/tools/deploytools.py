"""Helpers for the deploy tests (tests/test_deploy_*.py): where the external tools are, a kustomize
render (the real one, or a resolver for the subset of kustomize this repo uses when no kustomize can be
installed), and PromQL helpers shared by the Prometheus and Grafana checks.
"""
from __future__ import annotations

import copy
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
# The oldest Kubernetes this repo supports (native gRPC probes GA 1.27, preStop sleep 1.30) and the
# newest schema kubernetes-validate ships at its pinned version.
K8S_VERSIONS = ("1.30.0", "1.37.0")


# --- tools -----------------------------------------------------------------------------------------
@functools.cache
def install_tools() -> str:
    """Run install-tools.sh once per test session (idempotent, never fatal); returns what it said."""
    try:
        done = subprocess.run(
            ["bash", str(TOOLS / "install-tools.sh")], capture_output=True, text=True, timeout=540
        )
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


# --- kustomize -------------------------------------------------------------------------------------
def kustomize_command() -> list[str] | None:
    """`kubectl kustomize` or `kustomize build`, whichever is here (neither is in Debian/PyPI/npm)."""
    kubectl = shutil.which("kubectl")
    if kubectl and subprocess.run([kubectl, "kustomize", "--help"], capture_output=True).returncode == 0:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    return None


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """Render with the real kustomize; raises CalledProcessError with its message on failure."""
    command = kustomize_command()
    assert command is not None, "no kustomize here"
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume"}
_TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "volumeMounts": "mountPath",
               "ports": "containerPort", "env": "name", "envFrom": None}


def render(directory: Path) -> list[dict[str, Any]]:
    """A kustomize build of the subset this repo uses: resources (files and kustomization dirs),
    components, strategic-merge patches (incl. ``$patch: delete``), JSON6902 patches with targets
    (regex names), ``namespace``, ``labels`` (includeTemplates, never selectors) and ``images``.
    Anything else in a kustomization is refused, so it can never silently diverge from kustomize."""
    return _build(Path(directory), component=False)


_KNOWN_FIELDS = {"apiVersion", "kind", "resources", "components", "patches", "namespace", "labels", "images"}


def _load_kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    unknown = set(data) - _KNOWN_FIELDS
    if unknown:
        raise NotImplementedError(f"{directory}: kustomize fields {sorted(unknown)} not supported by render()")
    return data


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _build(directory: Path, component: bool, base: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    k = _load_kustomization(directory)
    docs: list[dict[str, Any]] = list(base or [])
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        docs += _build(path, component=False) if path.is_dir() else _load_docs(path)
    for entry in k.get("components", []):
        docs = _build((directory / entry).resolve(), component=True, base=docs)
    for patch in k.get("patches", []):
        docs = _apply_patch(directory, patch, docs)
    if "namespace" in k:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = k["namespace"]
    for label in k.get("labels", []):
        if label.get("includeSelectors"):
            raise NotImplementedError("labels with includeSelectors")
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and doc["kind"] in _TEMPLATED:
                template = doc["spec"]["template"].setdefault("metadata", {})
                template.setdefault("labels", {}).update(label["pairs"])
    for image in k.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return docs


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in _TEMPLATED:
        return []
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _apply_patch(directory: Path, patch: dict[str, Any], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    parsed = yaml.safe_load(body)
    target = patch.get("target")
    if isinstance(parsed, list):  # JSON6902
        assert target, "a JSON6902 patch needs a target"
        for doc in docs:
            if _matches(doc, target):
                for op in parsed:
                    _json6902(doc, op)
        return docs
    sm_target = target or {"kind": parsed["kind"], "name": parsed["metadata"]["name"]}
    out = []
    for doc in docs:
        if _matches(doc, sm_target):
            if parsed.get("$patch") == "delete":
                continue
            doc = _merge(doc, {k: v for k, v in parsed.items() if k not in ("apiVersion", "kind")})
        out.append(doc)
    return out


def _matches(doc: dict[str, Any], target: dict[str, Any]) -> bool:
    if "kind" in target and not re.fullmatch(target["kind"], doc["kind"]):
        return False
    return "name" not in target or bool(re.fullmatch(target["name"], doc["metadata"]["name"]))


def _json6902(doc: dict[str, Any], op: dict[str, Any]) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    key: Any = int(last) if isinstance(node, list) else last
    if op["op"] in ("add", "replace"):
        if op["op"] == "replace" and (key not in node if isinstance(node, dict) else key >= len(node)):
            raise KeyError(f"replace of missing path {op['path']}")
        if isinstance(node, list) and op["op"] == "add":
            node.insert(key, copy.deepcopy(op["value"]))
        else:
            node[key] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del node[key]
    else:
        raise NotImplementedError(f"JSON6902 op {op['op']}")


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    """Strategic merge: maps merge, named lists merge by their key, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, k) if k in base and v is not None else v
            if v is None:
                out.pop(k, None)
        return out
    merge_key = _MERGE_KEYS.get(key)
    if isinstance(base, list) and isinstance(patch, list) and merge_key:
        out_list = list(base)
        for item in patch:
            idx = next((i for i, b in enumerate(out_list) if b.get(merge_key) == item.get(merge_key)), None)
            if idx is None:
                out_list.append(item)
            else:
                out_list[idx] = _merge(out_list[idx], item)
        return out_list
    return copy.deepcopy(patch)


def by_identity(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    ident = {}
    for doc in docs:
        meta = doc["metadata"]
        ident[(doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return ident


# --- PromQL ----------------------------------------------------------------------------------------
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "inf", "nan", "atan2",
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
METRIC_MODULES = ("ollama_optimizer.grpc_interceptors", "matcher_service.metrics", "tuner_service.metrics",
                  "proxy_plugin.metrics")
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
             "scrape_samples_post_metric_relabeling"}
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "untyped": ("",)}


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
