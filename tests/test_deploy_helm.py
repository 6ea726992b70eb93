"""deploy/helm/ollama-optimizer: `helm lint` and `helm template` with the real helm, the values doing what
they say (test_deploy_kubernetes.py validates the renders against the Kubernetes schemas), and the chart kept from
drifting away from the kustomize base (same containers, ports, env, probes, services, policies)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "tools"))
import deploytools as dt

CHART = dt.DEPLOY / "helm" / "ollama-optimizer"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "ollama-optimizer"
# Differ on purpose: where clients dial (the chart knows its namespace) and where Ollama is.
PER_INSTALL_CONFIG = {"MATCHER_ADDRESS", "TUNER_ADDRESS", "OLLAMA_HOST"}
# Fields of a container and of a pod spec that must be the same in the chart and the kustomize base.
CONTAINER_FIELDS = (
    "name",
    "args",
    "envFrom",
    "env",
    "ports",
    "startupProbe",
    "readinessProbe",
    "livenessProbe",
    "lifecycle",
    "resources",
    "securityContext",
    "volumeMounts",
)
POD_FIELDS = (
    "serviceAccountName",
    "automountServiceAccountToken",
    "securityContext",
    "volumes",
    "terminationGracePeriodSeconds",
    "topologySpreadConstraints",
    "restartPolicy",
)


@pytest.fixture(scope="module", autouse=True)
def helm_present() -> None:
    for tool in ("helm", "kubectl"):
        if dt.k8s_tool(tool) is None:
            dt.skip(dt.missing_reason(tool))


def template(values: Path | None = None, *args: str) -> list[dict[str, Any]]:
    extra = ["--values", str(values)] if values else []
    return dt.helm_template(CHART, NAMESPACE, *extra, *args)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def by_component(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Workloads by (kind, component): the migrate Job's name carries the release revision in the chart."""
    return {
        (d["kind"], d["metadata"]["labels"]["app.kubernetes.io/component"]): d
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }


def test_the_helm_is_the_pinned_real_one() -> None:
    assert dt.helm("version", "--short").startswith("v4.1.4")


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(values: Path) -> None:
    out = dt.helm("lint", str(CHART), "--strict", "--values", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_every_object_is_in_the_release_namespace(values: Path) -> None:
    """(Schema validation of these renders: test_deploy_kubernetes.py, targets helm:*.)"""
    docs = template(values)
    assert len(docs) >= 15
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


def test_a_database_is_required() -> None:
    with pytest.raises(AssertionError, match=r"set database.dsn, postgres.enabled=true, or existingSecret"):
        template()


def test_in_cluster_postgres_needs_a_password() -> None:
    with pytest.raises(AssertionError, match=r"postgres.password is required"):
        template(None, "--set", "postgres.enabled=true")


def test_chart_matches_the_kustomize_base() -> None:
    """Same objects, and per workload the same containers, ports, env sources, probes, hardening and
    volumes; same Service ports and selectors, NetworkPolicies and configuration keys."""
    chart = template(CHART / "ci" / "external-dsn-values.yaml")
    base = dt.kustomize_build(dt.DEPLOY / "kubernetes" / "base")

    def identities(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "Job"}

    assert identities(chart) == identities(base)
    autoscaled = {d["spec"]["scaleTargetRef"]["name"] for d in chart if d["kind"] == "HorizontalPodAutoscaler"}
    chart_workloads, base_workloads = by_component(chart), by_component(base)
    assert chart_workloads.keys() == base_workloads.keys()
    for key, ours in chart_workloads.items():
        theirs = base_workloads[key]
        pod, base_pod = ours["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
        for field in POD_FIELDS:
            assert pod.get(field) == base_pod.get(field), f"{key}: pod {field}"
        assert len(pod["containers"]) == len(base_pod["containers"]), key
        for container, base_container in zip(pod["containers"], base_pod["containers"]):
            for field in CONTAINER_FIELDS:
                assert container.get(field) == base_container.get(field), f"{key}: container {field}"
        for field in ("strategy", "revisionHistoryLimit"):
            assert ours["spec"].get(field) == theirs["spec"].get(field), f"{key}: {field}"
        # Under an HPA the chart leaves replicas to it (an upgrade must not reset the count).
        if ours["metadata"]["name"] not in autoscaled:
            assert ours["spec"].get("replicas") == theirs["spec"].get("replicas"), f"{key}: replicas"
        template_meta, base_meta = ours["spec"]["template"]["metadata"], theirs["spec"]["template"]["metadata"]
        assert template_meta.get("annotations") == base_meta.get("annotations"), key
        assert (
            base_meta["labels"].items() - {("app.kubernetes.io/managed-by", "kustomize")}
            <= template_meta["labels"].items()
        ), key
    for kind in ("Service", "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for doc in (d for d in base if d["kind"] == kind):
            assert one(chart, kind, doc["metadata"]["name"])["spec"] == doc["spec"], f"{kind}/{doc['metadata']['name']}"
    config = one(chart, "ConfigMap", "ollama-optimizer-config")["data"]
    base_config = one(base, "ConfigMap", "ollama-optimizer-config")["data"]
    assert config.keys() == base_config.keys()
    for key in base_config.keys() - PER_INSTALL_CONFIG:
        assert config[key] == base_config[key], key
    assert (
        one(chart, "Secret", "ollama-optimizer-secrets")["stringData"]
        == one(base, "Secret", "ollama-optimizer-secrets")["stringData"]
    )


def test_servicemonitor_matches_the_kustomize_component() -> None:
    chart = template(CHART / "ci" / "in-cluster-postgres-values.yaml")
    component = dt.load_docs(
        (dt.DEPLOY / "kubernetes" / "components" / "servicemonitor" / "servicemonitor.yaml").read_text()
    )
    monitor = one(chart, "ServiceMonitor", "ollama-optimizer")
    assert monitor["spec"] == component[0]["spec"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not [d for d in template(CHART / "ci" / "external-dsn-values.yaml") if d["kind"] == "ServiceMonitor"]


def test_in_cluster_postgres_tls_and_replicas() -> None:
    docs = template(CHART / "ci" / "in-cluster-postgres-values.yaml")
    secret = one(docs, "Secret", "ollama-optimizer-secrets")["stringData"]
    assert secret == {
        "OPTIMIZER_DSN": f"postgresql://optimizer:optimizer-dev@postgres.{NAMESPACE}.svc.cluster.local:5432/optimizer",
        "OPTIMIZER_AUTH_TOKEN": "dev-gateway-token-0001",
        "OPTIMIZER_SOURCE_TOKENS": "gateway=dev-gateway-token-0001",
        "TUNER_DECISION_KEY": "dev-decision-key",
    }
    for name in ("matcher", "tuner", "migrate"):  # every key reaches the services (the gateway: its token only)
        workload = next(w for (_kind, component), w in by_component(docs).items() if component == name)
        assert {"secretRef": {"name": "ollama-optimizer-secrets"}} in workload["spec"]["template"]["spec"][
            "containers"
        ][0]["envFrom"], name
    postgres = one(docs, "Deployment", "postgres")["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "postgres"}} in postgres["volumes"]
    one(docs, "PersistentVolumeClaim", "postgres")
    assert one(docs, "Service", "postgres")["spec"]["ports"][0]["port"] == 5432

    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert one(docs, "Deployment", "matcher")["spec"]["replicas"] == 3
    assert one(docs, "Deployment", "gateway")["spec"]["replicas"] == 3
    assert one(docs, "Deployment", "tuner")["spec"]["replicas"] == 1

    config = one(docs, "ConfigMap", "ollama-optimizer-config")["data"]
    assert config["TUNER_DEFAULT_NUM_CTX"] == "8192"
    tls = "/etc/ollama-optimizer/tls"
    assert {config[k] for k in ("OPTIMIZER_TLS_CERT", "OPTIMIZER_CLIENT_TLS_CERT")} == {f"{tls}/tls.crt"}
    assert {config[k] for k in ("OPTIMIZER_TLS_CLIENT_CA", "OPTIMIZER_CLIENT_TLS_CA")} == {f"{tls}/ca.crt"}
    for name, port, service in (("matcher", 50061, "optimizer.v1.Matcher"), ("tuner", 50062, "optimizer.v1.Tuner")):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "registry.example.com/ollama-optimizer:0.1.0"
        # kubelet gRPC probes speak no TLS: the built-in health check does, from inside the pod.
        assert container["readinessProbe"]["exec"]["command"] == [
            "ollama-optimizer",
            "health",
            f"localhost:{port}",
            "--service",
            service,
        ]
        assert container["livenessProbe"]["exec"]["command"] == [
            "ollama-optimizer",
            "health",
            f"localhost:{port}",
            "--service",
            "liveness",
        ]
        assert {"name": "tls", "mountPath": tls, "readOnly": True} in container["volumeMounts"]
        assert {"name": "tls", "secret": {"secretName": "ollama-optimizer-tls"}} in pod["volumes"]


def test_existing_secret_is_used_and_never_created() -> None:
    docs = template(CHART / "ci" / "existing-secret-values.yaml")
    assert not [d for d in docs if d["kind"] == "Secret"]
    for (_kind, component), workload in by_component(docs).items():
        container = workload["spec"]["template"]["spec"]["containers"][0]
        if component == "gateway":  # its token only
            assert container["env"] == [
                {
                    "name": "OPTIMIZER_AUTH_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "my-optimizer-secrets", "key": "OPTIMIZER_AUTH_TOKEN"}},
                }
            ]
        else:
            assert {"secretRef": {"name": "my-optimizer-secrets"}} in container["envFrom"], component


def test_network_policies_can_be_switched_off() -> None:
    docs = template(CHART / "ci" / "external-dsn-values.yaml", "--set", "networkPolicy.enabled=false")
    assert not [d for d in docs if d["kind"] == "NetworkPolicy"]


def test_image_tag_defaults_to_the_chart_app_version() -> None:
    import yaml

    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    docs = template(CHART / "ci" / "external-dsn-values.yaml")
    images = {c["image"] for w in by_component(docs).values() for c in w["spec"]["template"]["spec"]["containers"]}
    assert images == {f"ollama-optimizer:{app_version}"}


def test_chart_app_version_is_the_package_version() -> None:
    import tomllib

    import yaml

    package = tomllib.loads((dt.REPO / "pyproject.toml").read_text())["project"]["version"]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == package
