"""Tuner micro-benchmark: server-side Recommend latency under concurrent load, batched Report throughput.

    .venv/bin/python -m bench.tuner [--calls 20000] [--clients 4] [--concurrency 16] [--outcomes 100000]
    .venv/bin/python -m bench.tuner --templates 1000000   # that many stored templates on one model

With --templates N the database first holds N learned templates of one model (seeded history); the
tuner then starts on it (``startup_s``, ``rss_mib`` after start-up) and Recommend spreads over all of them.

Runs an embedded Postgres (or OPTIMIZER_DSN), an in-process tuner, and client processes.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np

from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.db import create_pool
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.migrations import apply_migrations
from tuner_service import store
from tuner_service.guard import GuardSettings
from tuner_service.main import start_tuner
from tuner_service.service import TunerServicer
from tuner_service.settings import TunerSettings
from tuner_service.state import TemplateState

MODELS = ("qwen2.5:14b", "llama3.1:8b", "mistral:7b")
TEMPLATES = 30


def _request(i: int, stored: int = 0) -> tuner_pb2.RecommendRequest:
    if stored:  # one model, templates spread over all stored ones
        return tuner_pb2.RecommendRequest(
            model=MODELS[0], template_id=1 + (i * 7919) % stored, prompt_units=200 + (i * 37) % 6000, message_count=2
        )
    return tuner_pb2.RecommendRequest(
        model=MODELS[i % 3], template_id=1 + i % TEMPLATES, prompt_units=200 + (i * 37) % 6000, message_count=2
    )


async def _seed_templates(pool: asyncpg.Pool, count: int) -> None:
    """``count`` learned templates of MODELS[0] (the same seeded history each), written with COPY."""
    rng = random.Random(1)
    template = TemplateState(observations=20, successes=20, last_safe_ctx=8192, current_ctx=8192, current_batch=512)
    for _ in range(20):
        template.need.add(rng.randint(2000, 6000))
        template.output.add(rng.randint(100, 400))
    row = store.rule_row(MODELS[0], 0, template, 0.87)
    fields = (
        "model",
        "template_id",
        "param",
        "value",
        "sample_count",
        "confidence",
        "success_count",
        "total_count",
        "pinned",
        "last_safe_value",
        "truncations",
        "state",
    )
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tuner_model (model, state) VALUES ($1, '{}') ON CONFLICT DO NOTHING", MODELS[0])
        for start in range(1, count + 1, 100_000):
            records = []
            for template_id in range(start, min(count, start + 99_999) + 1):
                records.append(
                    (
                        row.model,
                        template_id,
                        "num_ctx",
                        row.ctx_value,
                        row.samples,
                        row.confidence,
                        row.successes,
                        row.samples,
                        False,
                        row.last_safe,
                        0,
                        row.state,
                    )
                )
                records.append(
                    (
                        row.model,
                        template_id,
                        "num_batch",
                        row.batch_value,
                        row.samples,
                        row.confidence,
                        row.successes,
                        row.samples,
                        False,
                        0,
                        0,
                        "{}",
                    )
                )
            await conn.copy_records_to_table("tuner_rule", records=records, columns=fields)


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _outcome(prefix: str, i: int) -> tuner_pb2.Outcome:
    units = 200 + (i * 37) % 6000
    return tuner_pb2.Outcome(
        outcome_id=f"{prefix}-{i}",
        model=MODELS[i % 3],
        template_id=1 + i % TEMPLATES,
        prompt_units=units,
        message_count=2,
        action=tuner_pb2.APPLY,
        num_ctx=8192,
        prompt_eval_count=int(units * 1.1) + 24,
        eval_count=100 + i % 300,
        total_duration_ns=2_000_000_000,
        load_duration_ns=4_000_000,
        prompt_eval_duration_ns=300_000_000,
        eval_duration_ns=1_500_000_000,
        done_reason="stop",
        counts_known=True,
        latency_seconds=2.0,
        ttft_seconds=0.3,
    )


async def _client_load(address: str, calls: int, concurrency: int, offset: int, stored: int) -> list[float]:
    channel = create_channel(address)
    stub = tuner_pb2_grpc.TunerStub(channel)
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            request = _request(offset + i, stored)
            t0 = time.perf_counter()
            await stub.Recommend(request, timeout=5)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await channel.close()
    return latencies


def _client_process(address: str, calls: int, concurrency: int, offset: int, stored: int) -> list[float]:
    return asyncio.run(_client_load(address, calls, concurrency, offset, stored))


def _timed_recommend(samples: list[float]):  # type: ignore[no-untyped-def]
    """Server-side timing of the whole Recommend handler (message in -> message out)."""
    original = TunerServicer.Recommend

    @functools.wraps(original)
    async def timed(self, request, context):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return await original(self, request, context)
        finally:
            samples.append(time.perf_counter() - t0)

    TunerServicer.Recommend = timed  # type: ignore[method-assign]


async def _report_throughput(address: str, total: int, batch: int, concurrency: int) -> float:
    channel = create_channel(address)
    stub = tuner_pb2_grpc.TunerStub(channel)
    batches = [
        tuner_pb2.ReportRequest(outcomes=[_outcome("r", i) for i in range(s, min(s + batch, total))])
        for s in range(0, total, batch)
    ]
    queue = iter(batches)
    accepted = 0

    async def worker() -> None:
        nonlocal accepted
        for request in queue:
            response = await stub.Report(request, timeout=30)
            accepted += response.accepted

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await channel.close()
    assert accepted == total, f"accepted {accepted} of {total}"
    return total / elapsed


async def run(args: argparse.Namespace, dsn: str) -> dict[str, object]:
    await apply_migrations(dsn)
    pool = await create_pool(dsn, 2, 8)
    server_samples: list[float] = []
    _timed_recommend(server_samples)
    seeded_s = 0.0
    if args.templates:
        t0 = time.perf_counter()
        await _seed_templates(pool, args.templates)
        seeded_s = time.perf_counter() - t0
    gc.collect()
    rss_before = _rss_mib()
    t0 = time.perf_counter()
    # Ingest capacity, not the per-source Report rate limit (TUNER_REPORT_RATE), is what is measured here.
    tuner = await start_tuner(
        pool,
        ServerConfig(listen="127.0.0.1:0", metrics_port=0),
        TunerSettings(),
        guard=GuardSettings(rate_per_second=0),
    )
    startup_s = time.perf_counter() - t0
    rss_after = _rss_mib()
    try:
        tuner.core.report([_outcome("seed", i) for i in range(3 * TEMPLATES * 5)])  # learned templates
        loop = asyncio.get_running_loop()
        per_client = args.calls // args.clients
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.clients) as procs:
            pending = [
                loop.run_in_executor(
                    None,
                    functools.partial(
                        procs.apply,
                        _client_process,
                        (tuner.address, per_client, args.concurrency, k * per_client, args.templates),
                    ),
                )
                for k in range(args.clients)
            ]
            client_lists = await asyncio.gather(*pending)
        client = np.array([x for lst in client_lists for x in lst]) * 1000
        server = np.array(server_samples[-len(client) :]) * 1000

        report_rate = await _report_throughput(tuner.address, args.outcomes, args.batch, 4)
        t0 = time.perf_counter()
        await tuner.core.writer.wait_drained()
        drained_s = time.perf_counter() - t0
        written = await pool.fetchval("SELECT count(*) FROM tuner_outcome")
        in_memory = sum(len(m.templates) for m in tuner.core.policy.models.values())
        rss_end = _rss_mib()
    finally:
        await tuner.stop(0)
        await pool.close()
    scale = (
        {
            "templates_stored": args.templates,
            "seed_s": round(seeded_s, 1),
            "templates_in_memory": in_memory,
            "rss_mib_end": round(rss_end, 1),
        }
        if args.templates
        else {}
    )
    return {
        **scale,
        "startup_s": round(startup_s, 3),
        "rss_mib": round(rss_after, 1),
        "rss_mib_startup_growth": round(rss_after - rss_before, 1),
        "recommend_calls": len(client),
        "recommend_clients": args.clients,
        "recommend_concurrency_per_client": args.concurrency,
        "recommend_ms_p50": round(float(np.percentile(server, 50)), 4),
        "recommend_ms_p99": round(float(np.percentile(server, 99)), 4),
        "recommend_client_ms_p50": round(float(np.percentile(client, 50)), 3),
        "recommend_client_ms_p99": round(float(np.percentile(client, 99)), 3),
        "report_batch": args.batch,
        "report_outcomes_per_s": round(report_rate),
        "outcomes_written": int(written),
        "write_behind_drain_after_reports_s": round(drained_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--templates", type=int, default=0, help="stored templates on one model (0 = 30 per model)")
    args = parser.parse_args()
    dsn = os.environ.get("OPTIMIZER_DSN", "")
    if dsn:
        result = asyncio.run(run(args, dsn))
    else:
        from ollama_optimizer.embedded_pg import EmbeddedPostgres

        with tempfile.TemporaryDirectory() as tmp:
            server = EmbeddedPostgres(Path(tmp) / "pg")
            try:
                result = asyncio.run(run(args, server.uri()))
            finally:
                server.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
