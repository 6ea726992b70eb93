"""deploy/kubernetes and deploy/helm: every overlay rendered by the real `kubectl kustomize`, and the Helm
chart rendered by the real `helm template`, validates against the Kubernetes schemas (kubernetes-validate,
strict, offline) and keeps the invariants the design asks of the manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "tools"))
import deploytools as dt

K8S = dt.DEPLOY / "kubernetes"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
KUSTOMIZE_TARGETS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
HELM_CHART = dt.DEPLOY / "helm" / "ollama-optimizer"
HELM_NAMESPACE = "ollama-optimizer"
# helm:NAME renders the chart with its ci/NAME-values.yaml. All are schema-validated; the invariants below
# hold for all but in-cluster-postgres (no HPA, TLS probes: test_deploy_helm.py checks that one).
TARGETS = [*KUSTOMIZE_TARGETS, "helm:external-dsn", "helm:existing-secret"]
SCHEMA_TARGETS = [*TARGETS, "helm:in-cluster-postgres"]
# CRDs: no schema in kubernetes-validate; checked structurally below instead.
CRD_GROUPS = ("monitoring.coreos.com/",)
# The prod overlay leaves the Secret to out-of-band management (see its kustomization.yaml).
EXTERNAL_SECRETS = {"overlays/prod": {"ollama-optimizer-secrets"}, "helm:existing-secret": {"my-optimizer-secrets"}}
OUR_IMAGE = "ollama-optimizer"


def kubectl_or_skip() -> None:
    for tool in ("kubectl", "helm"):
        if dt.k8s_tool(tool) is None:
            dt.skip(dt.missing_reason(tool))


def render(target: str) -> list[dict[str, Any]]:
    if target.startswith("helm:"):
        values = HELM_CHART / "ci" / f"{target.removeprefix('helm:')}-values.yaml"
        return dt.helm_template(HELM_CHART, HELM_NAMESPACE, "--values", str(values))
    return dt.kustomize_build(K8S / target)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each target as `kubectl kustomize` (kubectl 1.33, kustomize 5.6) or `helm template` renders it."""
    kubectl_or_skip()
    return {t: render(t) for t in SCHEMA_TARGETS}


def test_overlays_exist() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("target", KUSTOMIZE_TARGETS)
def test_kustomize_renders(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    assert rendered[target], f"{target} rendered nothing"


def test_kustomize_is_the_pinned_real_one() -> None:
    kubectl_or_skip()
    done = subprocess.run([dt.k8s_tool("kubectl"), "version", "--client"], capture_output=True, text=True)
    assert "Client Version: v1.33.9" in done.stdout and "Kustomize Version: v5.6.0" in done.stdout


@pytest.mark.parametrize("version", dt.K8S_VERSIONS)
@pytest.mark.parametrize("target", SCHEMA_TARGETS)
def test_manifests_validate_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], target: str, version: str
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")
    for doc in rendered[target]:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc}")


def test_every_source_manifest_validates() -> None:
    """Each YAML file under deploy/kubernetes on its own (overlay patches excepted: they are partial)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")
    checked = 0
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or "patch" in path.name or path.name.startswith("drop-"):
            continue
        for doc in dt.load_docs(path.read_text()):
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue
            kubernetes_validate.validate(doc, dt.K8S_VERSIONS[0], strict=True)
            checked += 1
    assert checked >= 15


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("target", TARGETS)
def test_pods_are_locked_down(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    for workload in _workloads(rendered[target]):
        pod = workload["spec"]["template"]["spec"]
        name = f"{target}: {workload['kind']}/{workload['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name


@pytest.mark.parametrize("target", TARGETS)
def test_grpc_services_have_native_grpc_probes(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    config = _one(docs, "ConfigMap", "ollama-optimizer-config")["data"]
    for name, service, env in (
        ("matcher", "optimizer.v1.Matcher", "MATCHER_LISTEN"),
        ("tuner", "optimizer.v1.Tuner", "TUNER_LISTEN"),
    ):
        container = _one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == [name]
        port = int(config[env].rsplit(":", 1)[1])
        assert config[env].startswith("0.0.0.0:"), "metrics bind to the listen host: must be reachable"
        assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": service}
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}  # not the database
        assert container["startupProbe"]["grpc"]["port"] == port
        metrics_port = int(config[env.replace("LISTEN", "METRICS_PORT")])
        assert {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"} in container["ports"]
        annotations = _one(docs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics_port)


@pytest.mark.parametrize("target", TARGETS)
def test_matcher_scales_behind_a_headless_service(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    deployment = _one(docs, "Deployment", "matcher")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one(docs, "Service", "matcher-headless")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    hpa = _one(docs, "HorizontalPodAutoscaler", "matcher")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "matcher"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = _one(docs, "PodDisruptionBudget", "matcher")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    config = _one(docs, "ConfigMap", "ollama-optimizer-config")["data"]
    address = config["MATCHER_ADDRESS"]
    assert address.startswith("dns:///matcher-headless"), "clients must resolve every pod (round_robin)"
    namespace = service["metadata"].get("namespace")
    if namespace:
        assert address == f"dns:///matcher-headless.{namespace}.svc.cluster.local:50061"
    assert 0 < int(config["OPTIMIZER_MAX_CONNECTION_AGE_SECONDS"]) <= 600


@pytest.mark.parametrize("target", TARGETS)
def test_tuner_is_a_single_writer(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    tuner = _one(docs, "Deployment", "tuner")
    assert tuner["spec"]["replicas"] == 1
    assert tuner["spec"]["strategy"] == {"type": "Recreate"}
    assert not [
        d for d in docs if d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] == "tuner"
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_migrations_run_as_a_job(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    (job,) = [
        d
        for d in rendered[target]
        if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
    ]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    config = _one(rendered[target], "ConfigMap", "ollama-optimizer-config")["data"]
    assert config.get("OPTIMIZER_MIGRATE_ON_START", "false") == "false", "only the Job migrates"
    for deployment in (d for d in rendered[target] if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("OPTIMIZER_MIGRATE_ON_START", "false") == "false", deployment["metadata"]["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_references_resolve(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    external = EXTERNAL_SECRETS.get(target, set())
    for workload in _workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        if "serviceAccountName" in pod:
            assert ("ServiceAccount", pod["serviceAccountName"]) in have
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in have
                if "secretRef" in source:
                    secret = source["secretRef"]["name"]
                    assert ("Secret", secret) in have or secret in external, f"{target}: Secret {secret}"
            for variable in container.get("env", []):
                if "secretKeyRef" in variable.get("valueFrom", {}):
                    secret = variable["valueFrom"]["secretKeyRef"]["name"]
                    assert ("Secret", secret) in have or secret in external, f"{target}: Secret {secret}"
    if target == "overlays/prod":
        assert ("Secret", "ollama-optimizer-secrets") not in have, "prod must not overwrite the real Secret"
    templates = [w["spec"]["template"]["metadata"]["labels"] for w in _workloads(docs)]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in templates), service["metadata"]["name"]


SERVER_SECRETS = ("OPTIMIZER_DSN", "OPTIMIZER_AUTH_TOKEN", "OPTIMIZER_SOURCE_TOKENS", "TUNER_DECISION_KEY")


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_reach_the_services_and_only_its_token_the_gateway(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    """Matcher and tuner read the whole Secret (DSN, tokens, the decision-id key); the gateway reads
    its bearer token from it and nothing else (it echoes decision ids: it must not hold their key)."""
    docs = rendered[target]
    secrets = {
        d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})} for d in docs if d["kind"] == "Secret"
    }
    external = EXTERNAL_SECRETS.get(target, set())
    containers = {
        w["metadata"]["name"]: w["spec"]["template"]["spec"]["containers"][0]
        for w in _workloads(docs)
        if w["metadata"]["name"] in ("matcher", "tuner", "gateway")
    }
    for component in ("matcher", "tuner"):
        names = [s["secretRef"]["name"] for s in containers[component]["envFrom"] if "secretRef" in s]
        assert len(names) == 1, component
        assert names[0] in external or set(SERVER_SECRETS) <= secrets[names[0]].keys(), (component, names[0])
    gateway = containers["gateway"]
    assert not [s for s in gateway["envFrom"] if "secretRef" in s]
    from_secrets = [e for e in gateway.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert [(e["name"], e["valueFrom"]["secretKeyRef"]["key"]) for e in from_secrets] == [
        ("OPTIMIZER_AUTH_TOKEN", "OPTIMIZER_AUTH_TOKEN")
    ]
    assert from_secrets[0]["valueFrom"]["secretKeyRef"]["name"] == names[0]


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "base"])
def test_overlays_pin_a_real_image(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    for workload in _workloads(rendered[target]):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), f"{target}: {image}"


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_admit_the_service_ports(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for name in ("matcher", "tuner", "gateway"):
        pod = _one(docs, "Deployment", name)["spec"]["template"]
        ports = {p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        admitted = {
            port["port"]
            for policy in policies
            if policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
            for rule in policy["spec"].get("ingress", [])
            for port in rule.get("ports", [])
        }
        assert ports == admitted, f"{name}: container ports {ports}, admitted {admitted}"
    gateway_labels = _one(docs, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert gateway_labels.get("ollama-optimizer.io/client") == "true", "the gateway must reach matcher/tuner"


def test_servicemonitor_component() -> None:
    """Structural check of the CRD (no schema offline): selects our Services' metrics ports, job names
    matching the compose scrape config and the alert rules."""
    (monitor,) = dt.load_docs((K8S / "components" / "servicemonitor" / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    spec = monitor["spec"]
    assert spec["jobLabel"] == "app.kubernetes.io/component"
    assert [e["port"] for e in spec["endpoints"]] == ["metrics"]
    kubectl_or_skip()
    base = dt.kustomize_build(K8S / "base")
    services = [d for d in base if d["kind"] == "Service"]
    components = spec["selector"]["matchExpressions"][0]["values"]
    selected = [
        s
        for s in services
        if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and s["metadata"]["labels"]["app.kubernetes.io/component"] in components
    ]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected} == {"matcher", "tuner", "gateway"}
    for service in selected:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
