"""End to end: a real Prometheus (Debian's package) on loopback scrapes the real matcher, tuner and
gateway — each started through the `ollama-optimizer` CLI as in the containers — while traffic flows
through the gateway (official ollama client) to the Ollama emulator. Then every PromQL expression of
every dashboard panel and every alert rule goes through Prometheus' HTTP API: none may error, and none
may name a metric the services do not export. The scrape config is deploy/prometheus/prometheus.yml
with its discovery swapped for loopback targets; the rule files are deploy/prometheus/rules as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "tools"))
from bench.ports import free_port

import deploytools as dt
from plugin_fixtures import GENEROUS_DEADLINES

MODEL = "llama3.2:3b"
SCRAPE = "1s"
WAIT_S = 90.0  # failure bound of every wait: generous for a loaded 2-core CI host


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = WAIT_S) -> None:
    """Poll until ``url`` answers (bounded; the failure names the process and shows its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{_tail(proc)}")
        try:
            _get(url, timeout=1.0)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} not answering on {url} after {timeout}s:\n{_tail(proc)}")


def _tail(proc: subprocess.Popen[bytes]) -> str:
    log = getattr(proc, "log_path", None)
    return Path(log).read_text()[-3000:] if log and Path(log).exists() else ""


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=dt.REPO, start_new_session=True
        )
    proc.log_path = str(log)  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def database(pg_server: Any) -> Iterator[str]:
    import asyncpg

    name = f"deploy_e2e_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server.uri())
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name} TEMPLATE optimizer_template"))
    yield pg_server.uri(name)
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _prometheus_config(ports: dict[str, int]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, discovery replaced by the loopback targets."""
    config = yaml.safe_load((dt.DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=SCRAPE, scrape_timeout=SCRAPE, evaluation_interval=SCRAPE)
    config["rule_files"] = [str(dt.DEPLOY / "prometheus" / r) for r in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in ports:
            continue
        for key in ("dns_sd_configs", "static_configs"):
            job.pop(key, None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


class _Traffic:
    """Templated chats (plain and streamed), generates, a client-set num_ctx, an unknown model, /api/tags.

    Sent in two halves (``first_half``, ``second_half``); each returns how many telemetry items (one per answered
    chat/generate) the gateway queued for it."""

    def __init__(self, gateway_url: str) -> None:
        import ollama

        from bench.workload import words

        self._ollama, self._words = ollama, words
        rng = random.Random(11)
        self._system, self._instructions = words(rng, 100), words(rng, 300)
        self._client = ollama.Client(host=gateway_url, timeout=30)

    def _chats(self, indices: range) -> int:
        client, words, sent = self._client, self._words, 0
        for i in indices:
            messages = [
                {"role": "system", "content": self._system},
                {"role": "user", "content": self._instructions + "\n\n" + words(random.Random(i), 25)},
            ]
            if i % 3 == 1:
                parts = list(client.chat(model=MODEL, messages=messages, stream=True))
                assert parts[-1].done
            else:
                assert client.chat(model=MODEL, messages=messages).done
            sent += 1
            if i % 6 == 0:
                client.generate(model=MODEL, prompt=self._instructions + words(random.Random(100 + i), 20))
                sent += 1
        return sent

    def first_half(self) -> int:
        return self._chats(range(12))

    def second_half(self) -> int:
        sent = self._chats(range(12, 24))
        self._client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], options={"num_ctx": 2048})
        with pytest.raises(self._ollama.ResponseError):  # answered 404 upstream: no telemetry
            self._client.chat(model="no-such-model:1b", messages=[{"role": "user", "content": "hi"}])
        self._client.list()
        return sent + 1


def _telemetry(metrics_url: str) -> dict[str, float]:
    """The gateway's telemetry counters, from its own /metrics: sent_report, sent_observe, dropped."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"sent_report": 0.0, "sent_observe": 0.0, "dropped": 0.0}
    for family in text_string_to_metric_families(_get(metrics_url)):
        for sample in family.samples:
            if sample.name == "optimizer_plugin_telemetry_sent_total":
                key = f"sent_{sample.labels['kind']}"  # report_buffered too: held by the tuner, not stored
                out[key] = out.get(key, 0.0) + sample.value
            elif sample.name == "optimizer_plugin_telemetry_dropped_total":
                out["dropped"] += sample.value
    return out


def _wait_telemetry_delivered(metrics_url: str, items: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the gateway counts all ``items`` outcomes it queued so far as delivered to the tuner (Report)."""
    _wait_for(
        lambda: _telemetry(metrics_url)["sent_report"] >= items,
        f"telemetry of {items} requests delivered to the tuner",
        proc,
    )


def _query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return _get(url, timeout=10)
    except urllib.error.HTTPError as exc:  # 400/422: PromQL error, JSON body
        return json.loads(exc.read())


def _exported_names(base: str) -> set[str]:
    """What the targets expose: sample names stored, plus families whose metadata (HELP/TYPE) was scraped,
    expanded with their sample suffixes (a labelled counter never incremented has metadata only)."""
    names = set(_get(f"{base}/api/v1/label/__name__/values")["data"])
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "gauge": ("",),
        "unknown": ("",),
    }
    for family, entries in _get(f"{base}/api/v1/metadata")["data"].items():
        for entry in entries:
            for suffix in suffixes.get(entry["type"], ("",)):
                names.add(family if family.endswith(suffix) and entry["type"] == "counter" else family + suffix)
    return names


# Counters the traffic increments and panels take the rate of. rate() is > 0 only once a series has two samples
# with an increase between them: each must be in Prometheus before the second half of the traffic.
TRAFFIC_SERIES = (
    'optimizer_gateway_requests_total{endpoint="chat", code="200"}',
    'grpc_server_handled_total{job="matcher", grpc_method="Match"}',
    'grpc_server_handled_total{job="tuner", grpc_method="Report"}',
)


def _last_scrapes(base: str) -> dict[str, float]:
    """Start time (Prometheus' clock, Unix seconds) of each target's last scrape, by job; only targets whose
    last scrape succeeded (a failed one marks the target's series stale)."""
    targets = _get(f"{base}/api/v1/targets")["data"]["activeTargets"]
    return {
        t["labels"]["job"]: datetime.fromisoformat(t["lastScrape"]).timestamp() for t in targets if t["health"] == "up"
    }


def _scraped_after(base: str, moments: dict[str, float]) -> dict[str, float] | None:
    """Each target's last scrape once every one started after its ``moments`` entry, else None."""
    scrapes = _last_scrapes(base)
    return scrapes if scrapes.keys() == moments.keys() and all(scrapes[j] > m for j, m in moments.items()) else None


def _rules_evaluated_after(base: str, moment: float) -> bool:
    """Every rule of every group has been evaluated since ``moment`` (Prometheus' clock, Unix seconds)."""
    groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
    return bool(groups) and all(
        datetime.fromisoformat(rule["lastEvaluation"]).timestamp() > moment
        for group in groups
        for rule in group["rules"]
    )


def _wait_for(condition: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = WAIT_S) -> Any:
    """Poll ``condition`` until it returns something true, and return that (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, KeyError):
            if value := condition():
                return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}:\n{_tail(proc)}")


def test_every_dashboard_and_alert_expression_against_real_services(database: str, tmp_path: Path) -> None:
    prometheus = dt.which("prometheus")
    if prometheus is None:
        dt.skip(dt.missing_reason("prometheus"))
    missing = [
        p
        for p in (
            "matcher_service/main.py",
            "tuner_service/main.py",
            "proxy_plugin/gateway.py",
            "bench/ollama_sim/__main__.py",
        )
        if not (dt.REPO / p).is_file()
    ]
    assert not missing, f"services missing: {missing}"

    ports = {
        name: free_port()
        for name in (
            "matcher",
            "matcher_grpc",
            "tuner",
            "tuner_grpc",
            "gateway",
            "gateway_http",
            "ollama",
            "prometheus",
        )
    }
    cli = [sys.executable, "-m", "ollama_optimizer.cli"]
    common = {"OPTIMIZER_DSN": database, "OPTIMIZER_LOG_LEVEL": "WARNING", "OPTIMIZER_SHUTDOWN_GRACE_SECONDS": "1"}
    matcher_addr, tuner_addr = f"127.0.0.1:{ports['matcher_grpc']}", f"127.0.0.1:{ports['tuner_grpc']}"
    gateway_url = f"http://127.0.0.1:{ports['gateway_http']}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            _prometheus_config({"matcher": ports["matcher"], "tuner": ports["tuner"], "gateway": ports["gateway"]})
        )
    )
    base = f"http://127.0.0.1:{ports['prometheus']}"

    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(
            _process(
                [
                    sys.executable,
                    "-m",
                    "bench.ollama_sim",
                    "--port",
                    str(ports["ollama"]),
                    "--time-scale",
                    "200",
                    "--models",
                    MODEL,
                ],
                {},
                tmp_path / "ollama.log",
            )
        )
        matcher = stack.enter_context(
            _process(
                [*cli, "matcher"],
                {**common, "MATCHER_LISTEN": matcher_addr, "MATCHER_METRICS_PORT": str(ports["matcher"])},
                tmp_path / "matcher.log",
            )
        )
        tuner = stack.enter_context(
            _process(
                [*cli, "tuner"],
                {**common, "TUNER_LISTEN": tuner_addr, "TUNER_METRICS_PORT": str(ports["tuner"])},
                tmp_path / "tuner.log",
            )
        )
        gateway = stack.enter_context(
            _process(
                [
                    *cli,
                    "gateway",
                    "--listen",
                    f"127.0.0.1:{ports['gateway_http']}",
                    "--upstream",
                    f"http://127.0.0.1:{ports['ollama']}",
                ],
                {
                    **common,
                    # the dashboards must show the optimized path: on a loaded host the shipped 50 ms budget
                    # would pass every request through, and no Match or Recommend would ever be counted
                    **{f"OPT_{name.upper()}": str(value) for name, value in GENEROUS_DEADLINES.items()},
                    "GATEWAY_METRICS_PORT": str(ports["gateway"]),
                    "MATCHER_ADDRESS": matcher_addr,
                    "TUNER_ADDRESS": tuner_addr,
                },
                tmp_path / "gateway.log",
            )
        )
        prom = stack.enter_context(
            _process(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                    "--storage.tsdb.retention.time=1h",
                    "--web.enable-lifecycle",
                ],
                {},
                tmp_path / "prometheus.log",
            )
        )
        for name, proc in (("matcher", matcher), ("tuner", tuner), ("gateway", gateway)):
            _wait_http(f"http://127.0.0.1:{ports[name]}/metrics", proc, name)
        _wait_http(f"http://127.0.0.1:{ports['ollama']}/api/version", emulator, "ollama emulator")
        _wait_http(f"{base}/-/ready", prom, "prometheus")

        # The health command the containers use, against the real services.
        for address, service in ((matcher_addr, "optimizer.v1.Matcher"), (tuner_addr, "optimizer.v1.Tuner")):
            done = subprocess.run([*cli, "health", address, "--service", service], capture_output=True, timeout=30)
            assert done.returncode == 0, done.stderr

        # Prometheus applies discovered targets a few seconds after start: wait for the first scrapes.
        _wait_for(
            lambda: (
                {t["labels"]["job"]: t["health"] for t in _get(f"{base}/api/v1/targets")["data"]["activeTargets"]}
                == {"matcher": "up", "tuner": "up", "gateway": "up"}
            ),
            "all three targets up",
            prom,
        )
        # Traffic in two halves with a scrape of each target in between (TRAFFIC_SERIES), so that the panels'
        # rates see an increase: all of it can take less than one scrape interval.
        gateway_metrics = f"http://127.0.0.1:{ports['gateway']}/metrics"
        traffic = _Traffic(gateway_url)
        items = traffic.first_half()
        _wait_telemetry_delivered(gateway_metrics, items, gateway)
        _wait_for(
            lambda: all(_query(base, s)["data"]["result"] for s in TRAFFIC_SERIES),
            f"the first half of the traffic in Prometheus: {TRAFFIC_SERIES}",
            prom,
        )
        items += traffic.second_half()
        _wait_telemetry_delivered(gateway_metrics, items, gateway)
        # Two scrapes of every target that began after the last outcome was delivered: a series the last Report
        # created (the client-set num_ctx's baseline reload) then has the two samples increase() and rate() need.
        # Then a rule evaluation over that data.
        delivered = dict.fromkeys(("matcher", "tuner", "gateway"), time.time())
        first = _wait_for(lambda: _scraped_after(base, delivered), "a scrape of each target after the traffic", prom)
        second = _wait_for(lambda: _scraped_after(base, first), "a second scrape of each target after it", prom)
        _wait_for(lambda: _rules_evaluated_after(base, max(second.values())), "a rule evaluation after them", prom)

        exported = _exported_names(base)
        expressions = [
            (f"{name} / {title}", dt.grafana_to_promql(expr))
            for name, dashboard in dt.load_dashboards().items()
            for title, expr in dt.grafana_exprs(dashboard)
        ]
        expressions += [(f"alert {rule['alert']}", rule["expr"]) for rule in dt.alert_rules()]
        problems, empty = [], []
        for where, expr in expressions:
            answer = _query(base, expr)
            if answer.get("status") != "success":
                problems.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n    {expr}")
                continue
            unknown = dt.metric_names(expr) - exported
            if unknown:
                problems.append(f"{where}: names {sorted(unknown)}, which the services do not export\n    {expr}")
            if not answer["data"]["result"]:
                empty.append(where)
        assert not problems, "\n".join(problems)

        # Prometheus evaluated every rule (after the traffic, see above) without an error.
        for group in _get(f"{base}/api/v1/rules")["data"]["groups"]:
            for rule in group["rules"]:
                assert rule["health"] == "ok" and not rule.get("lastError"), rule

        # The panels that must show something after this traffic do.
        for must in (
            "overview.json / Requests/s (gateway)",
            "overview.json / Decisions",
            "overview.json / Request latency: optimized vs passed through",
            "matcher.json / RPS by method",
            "matcher.json / Latency by method",
            "matcher.json / Match results",
            "tuner.json / Recommendations by action",
            "tuner.json / RPC rate by method",
            "tuner.json / Outcomes reported",
            "gateway.json / Time to first token by model",
            "gateway.json / Tokens/s per request (median)",
            "gateway.json / Token throughput",
            "overview.json / Requests optimized by model",
            "overview.json / Reloads by cause, and what the clients' options would cause",
            "gateway.json / Loaded num_batch by model (as sent)",
        ):
            assert must not in empty, (
                f"{must} shows no data after traffic; empty: {empty}\ngateway /metrics:\n"
                + _get(f"http://127.0.0.1:{ports['gateway']}/metrics")[:3000]
            )
        print(
            f"\n{len(expressions)} expressions evaluated; empty after this traffic (counters never "
            f"incremented, alerts not firing): {len(empty)}",
            file=sys.__stderr__,
        )
