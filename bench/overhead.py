"""Request-path overhead of the plugin core: ``python -m bench.overhead`` (last line: one JSON object).

- up: embedded Postgres + the real matcher and tuner as separate processes on loopback; after a
  warm-up that teaches them a templated workload, ``prepare()`` is timed request by request, each
  request's telemetry delivered before the next (real requests spend seconds in Ollama). Also split:
  requests whose Match answer came from the plugin's memo (Recommend only) and the others.
- saturated: the same, back to back, telemetry competing with the request path.
- floor: two grpc.health.v1 round trips (one per service) — the transport cost with no service work.
- down: the services are stopped; once the breakers are open ``prepare()`` is timed again.
- ``--large-share F``: a share F of the timed requests carries a 1 MiB non-ASCII prompt; each is sent
  concurrently with the requests after it (not awaited in turn, not timed), so the figures are those of
  the other requests while large prompts are in flight on the same event loop and matcher.
Targets (issue 5): up_ms_p50 <= 1.5, up_ms_p99 <= 4, down_ms_p99 <= 0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.ports import free_port
from bench.workload import make_requests, make_templates
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import DatabaseConfig
from ollama_optimizer.db import embedded_or_configured_dsn
from ollama_optimizer.health_check import check
from ollama_optimizer.migrations import apply_migrations
from ollama_optimizer.settings_env import load
from ollama_optimizer.supervisor import _spawn, _stop
from proxy_plugin.config import PluginConfig
from proxy_plugin.core import OptimizerCore
from proxy_plugin.metrics import REGISTRY

MODELS = ["llama3.1:8b", "qwen2.5:14b"]


@dataclass
class Services:
    matcher: str
    tuner: str
    stop: object  # async () -> None


@asynccontextmanager
async def running_services(data_dir: Path | None = None) -> AsyncIterator[Services]:
    """Postgres (OPTIMIZER_DSN, else embedded in ``data_dir``) + matcher + tuner child processes."""
    with tempfile.TemporaryDirectory(prefix="optimizer-bench-") as tmp:
        cfg = replace(load(DatabaseConfig, os.environ), data_dir=data_dir or Path(tmp) / "pg")
        async with embedded_or_configured_dsn(cfg) as (dsn, _embedded):
            await apply_migrations(dsn)
            matcher, tuner = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            env = {
                **os.environ,
                "OPTIMIZER_DSN": dsn,
                "MATCHER_LISTEN": matcher,
                "TUNER_LISTEN": tuner,
                "MATCHER_METRICS_PORT": str(free_port()),
                "TUNER_METRICS_PORT": str(free_port()),
            }
            children = {name: await _spawn(name, env) for name in ("matcher", "tuner")}
            stopped = False

            async def stop() -> None:
                nonlocal stopped
                if not stopped:
                    stopped = True
                    await _stop(children)

            try:
                for address in (matcher, tuner):
                    for _ in range(300):  # bounded: up to ~30 s for a cold start
                        code, _msg = await check(address, timeout=0.5)
                        if code == 0:
                            break
                        await asyncio.sleep(0.1)
                    else:
                        raise RuntimeError(f"service at {address} did not become SERVING")
                yield Services(matcher, tuner, stop)
            finally:
                await stop()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _health_round_trips(address: str, n: int) -> list[float]:
    """The transport floor: grpc.health.v1 Check round trips (no service work) to ``address``."""
    async with create_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def _outcome(payload: dict) -> dict:
    """A plausible final chunk for telemetry (the overhead bench has no Ollama)."""
    units = sum(len(m["content"].split()) for m in payload["messages"])
    return {
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": int(units * 1.3),
        "eval_count": 200,
        "total_duration": 2_000_000_000,
        "load_duration": 5_000_000,
        "prompt_eval_duration": 400_000_000,
        "eval_duration": 1_500_000_000,
    }


def _memo_hits() -> float:
    return REGISTRY.get_sample_value("optimizer_plugin_match_memo_total", {"result": "hit"}) or 0.0


@dataclass
class Timings:
    samples: list[float]  # ms per prepare()
    memo_hit: list[bool]  # the Match answer came from the plugin's memo (no Match round trip)
    applied: int


# Just under 1 MiB of UTF-8 (the plugin's cap), mostly non-ASCII.
LARGE_TEXT = ("Größe — мир, 東京. " * (1 << 16)).encode()[: (1 << 20) - 64].decode(errors="ignore")


def _large(payload: dict) -> dict:
    return {**payload, "messages": [{"role": "user", "content": LARGE_TEXT}]}


async def _timed(core: OptimizerCore, payloads: list[dict], drain: bool, large_every: int = 0) -> Timings:
    """Time ``prepare`` per request. ``drain``: deliver each request's telemetry before the next one,
    as when every request spends model time in Ollama; otherwise telemetry competes back to back.
    ``large_every``: every n-th request is a 1 MiB prompt sent concurrently and not timed."""
    timings = Timings([], [], 0)
    in_flight: list[asyncio.Task] = []
    for index, payload in enumerate(payloads):
        if large_every and index % large_every == large_every // 2:
            in_flight.append(asyncio.create_task(core.prepare(_large(payload))))
            continue
        hits = _memo_hits()
        t0 = time.perf_counter()
        _sent, decision = await core.prepare(payload)
        timings.samples.append((time.perf_counter() - t0) * 1000.0)
        timings.memo_hit.append(_memo_hits() > hits)
        timings.applied += decision.applied
        core.observe(payload, _outcome(payload), decision, latency_s=2.0, ttft_s=0.5)
        if drain:
            await core.flush()
    await asyncio.gather(*in_flight)
    return timings


def _split(timings: Timings) -> dict:
    """p50/p99 of the requests answered from the Match memo (one round trip) and of the others (two)."""
    result: dict = {"up_memo_hit_share": round(sum(timings.memo_hit) / len(timings.samples), 3)}
    for name, hit in (("memo_hit", True), ("memo_miss", False)):
        part = [ms for ms, h in zip(timings.samples, timings.memo_hit) if h is hit]
        if part:
            result[f"up_{name}_ms_p50"] = round(_quantile(part, 0.50), 4)
            result[f"up_{name}_ms_p99"] = round(_quantile(part, 0.99), 4)
    return result


async def run(requests: int, warmup: int, large_share: float = 0.0) -> dict:
    templates = make_templates(MODELS, 12, seed=5, shifting=False)
    payloads = [r.payload() for r in make_requests(templates, warmup + requests, seed=5, one_off_share=0.02)]
    async with running_services() as services:
        cfg = replace(
            PluginConfig(),
            matcher_address=services.matcher,
            tuner_address=services.tuner,
            probes=True,
            breaker_threshold=3,
            breaker_cooldown_s=3600,
        )
        core = OptimizerCore(cfg)
        for payload in payloads[:warmup]:  # teach templates; learning is asynchronous, so flush
            _sent, decision = await core.prepare(payload)
            core.observe(payload, _outcome(payload), decision, latency_s=2.0, ttft_s=0.5)
            await core.flush()
        floor = [
            a + b
            for a, b in zip(
                await _health_round_trips(services.matcher, requests),
                await _health_round_trips(services.tuner, requests),
            )
        ]
        large_every = round(1 / large_share) if large_share > 0 else 0
        up = await _timed(core, payloads[warmup:], drain=True, large_every=large_every)
        saturated = (await _timed(core, payloads[warmup:], drain=False)).samples
        await core.flush()
        await services.stop()  # type: ignore[operator]
        for payload in payloads[:20]:  # trip the breakers
            await core.prepare(payload)
        breakers = core.breaker_states()
        down = (await _timed(core, payloads[warmup:], drain=False)).samples
        await core.close(flush_timeout_s=0.5)
    return {
        "up_ms_p50": round(_quantile(up.samples, 0.50), 4),
        "up_ms_p99": round(_quantile(up.samples, 0.99), 4),
        **_split(up),
        "floor_ms_p50": round(_quantile(floor, 0.50), 4),
        "floor_ms_p99": round(_quantile(floor, 0.99), 4),
        "saturated_ms_p50": round(_quantile(saturated, 0.50), 4),
        "saturated_ms_p99": round(_quantile(saturated, 0.99), 4),
        "down_ms_p50": round(_quantile(down, 0.50), 4),
        "down_ms_p99": round(_quantile(down, 0.99), 4),
        "requests": requests,
        "large_prompts": sum(1 for i in range(requests) if large_every and i % large_every == large_every // 2),
        "up_applied_share": round(up.applied / requests, 3),
        "breakers": breakers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--large-share",
        type=float,
        default=0.0,
        help="share of requests with a 1 MiB non-ASCII prompt, sent concurrently (e.g. 0.01)",
    )
    args = parser.parse_args()
    if not 0 <= args.large_share <= 0.5:
        parser.error("--large-share must be in 0..0.5")
    result = asyncio.run(run(args.requests, args.warmup, args.large_share))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
