"""``make demo``: one templated workload sent twice with the official ``ollama`` client through the gateway (the
real matcher + tuner on embedded Postgres), each time to a fresh Ollama emulator: first learning only
(``OPT_APPLY_OPTIONS=false``: Ollama gets every request as its client sent it, with its defaults, and the tuner
learns from what it sees, Ollama's default context included), then optimizing. The emulator's own account of both
side by side, then ``ollama-optimizer stats`` (the optimizer's measurement against the baseline it learned). Run
through bench/demo.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ollama

from bench.ollama_sim import EmulatorConfig, start_emulator
from bench.overhead import running_services
from bench.workload import WorkloadRequest, make_requests, make_templates
from ollama_optimizer.embedded_pg import quiet_runtime_dir_warning
from proxy_plugin.config import load_config
from proxy_plugin.core import OptimizerCore
from proxy_plugin.gateway import start_gateway
from proxy_plugin.metrics import REGISTRY
from tuner_service.benefit_view import size

MODELS = ["llama3.2:3b", "llama3.1:8b"]
TIME_SCALE = 500  # simulated seconds per real second
DEMO_DEADLINES = {"budget_ms": 2000.0, "call_timeout_ms": 1000.0}
LONG_DOC_TAIL = (2500, 4500)  # words of the documents one template carries (about 3-6 k tokens)


@dataclass(frozen=True)
class Figure:
    """One row of the comparison: its label, how to read it from an emulator summary, and its unit."""

    label: str
    key: str
    unit: str  # "count" | "s" | "bytes"
    lower_is: str = "fewer"  # the word for a lower value ("fewer" | "faster" | "less")


FIGURES = (
    Figure("requests answered", "answered", "count"),
    Figure("truncated prompts", "truncated_requests", "count"),
    Figure("runner loads (all)", "loads", "count"),
    Figure("  of them reloads for new options", "reloads", "count"),
    Figure("models evicted to make room", "evictions", "count"),
    Figure("latency p50 (simulated)", "latency_p50_s", "s", "faster"),
    Figure("latency p95 (simulated)", "latency_p95_s", "s", "faster"),
    Figure("KV memory, time-weighted mean", "kv_mean_bytes", "bytes", "less"),
    Figure("KV memory, peak", "kv_peak_bytes", "bytes", "less"),
)


def _value(figure: Figure, value: float) -> str:
    if figure.unit == "s":
        return f"{value:.2f} s"
    if figure.unit == "bytes":
        return size(value)
    return f"{value:.0f}"


def _difference(figure: Figure, baseline: float, optimized: float) -> str:
    """The change worded by its direction (never a negative "saved")."""
    delta = optimized - baseline
    magnitude = _value(figure, abs(delta))
    if _value(figure, baseline) == _value(figure, optimized):
        return "same"
    if figure.key == "answered":
        return f"{magnitude} {'more' if delta > 0 else 'fewer'}"
    if delta < 0:
        return f"{magnitude} {figure.lower_is}"
    return f"{magnitude} {'slower' if figure.unit == 's' else 'more'}"


def comparison(baseline: dict[str, Any], optimized: dict[str, Any]) -> str:
    """The two runs side by side, as the emulator counted them."""
    rows = [("", "Ollama alone", "through the optimizer", "difference")]
    for figure in FIGURES:
        a, b = float(baseline[figure.key]), float(optimized[figure.key])
        rows.append((figure.label, _value(figure, a), _value(figure, b), _difference(figure, a, b)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


async def _send(host: str, workload: Sequence[WorkloadRequest], stream_every: int, core: OptimizerCore | None) -> None:
    client = ollama.AsyncClient(host=host)
    for request in workload:
        if stream_every and request.index % stream_every == 0:
            async for _part in await client.chat(model=request.model, messages=request.messages, stream=True):
                pass
        else:
            await client.chat(model=request.model, messages=request.messages)
        if core is not None:
            await core.flush()  # let each outcome teach before the next request (a demo, not a benchmark)


def _summary(emu: Any) -> dict[str, Any]:
    summary = dict(emu.summary())
    summary["answered"] = summary["requests"] - summary["errors"]
    return summary


def _gateway_counts() -> Counter[str]:
    """The gateway's decisions so far: "apply" and each passthrough reason (counters of this process)."""
    counts: Counter[str] = Counter()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if metric.name == "optimizer_plugin_passthrough" and sample.name.endswith("_total"):
                counts[sample.labels["reason"]] += int(sample.value)
            elif metric.name == "optimizer_plugin_decisions" and sample.name.endswith("_total"):
                counts["apply"] += int(sample.value) if sample.labels.get("action") == "apply" else 0
    return counts


def _decisions(counts: Counter[str]) -> str:
    """E.g. "120 requests optimized, passed through: 9 (no_data 6, low_confidence 3)"."""
    reasons = {reason: n for reason, n in counts.items() if reason != "apply" and n}
    listed = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"{counts['apply']} requests optimized, passed through: {sum(reasons.values())}" + (
        f" ({listed})" if listed else ""
    )


async def _cli(*args: str) -> None:
    """Run an ``ollama-optimizer`` command as an operator would and show its output."""
    print(f"\n$ ollama-optimizer {' '.join(args)}")
    sys.stdout.flush()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_optimizer.cli", *args, env={**os.environ, "OPTIMIZER_LOG_LEVEL": "WARNING"}
    )
    await proc.wait()


def _core(services: Any, apply_options: bool) -> OptimizerCore:
    """A gateway core on the demo's services. Deadlines for a shared or cold machine: the production 50 ms
    budget would pass requests through while the services warm up, and the demo shows what the optimizer
    does, not how it fails open."""
    config = replace(load_config(), matcher_address=services.matcher, tuner_address=services.tuner, **DEMO_DEADLINES)
    return OptimizerCore(replace(config, apply_options=apply_options))


async def _through_gateway(
    emu: Any, services: Any, workload: Sequence[WorkloadRequest], stream_every: int, apply_options: bool
) -> tuple[dict[str, Any], Counter[str]]:
    """The workload through a gateway in front of ``emu``: the emulator's summary and the gateway's decisions."""
    before = _gateway_counts()
    core = _core(services, apply_options)
    gateway = await start_gateway("127.0.0.1:0", emu.url, core=core)
    mode = "optimizing" if apply_options else "learning only: every request reaches Ollama as its client sent it"
    print(f"  - through a gateway ({gateway.url}, {mode}) to a fresh emulator ({emu.url}) ...")
    try:
        await _send(gateway.url, workload, stream_every, core)
    finally:
        await gateway.stop()
    return _summary(emu), _gateway_counts() - before


async def run(requests: int, stream_every: int, hardware: str, seed: int) -> int:
    templates = make_templates(
        MODELS, 4, seed=seed, shifting=False, long_doc_models=(MODELS[1],), long_doc_tail=LONG_DOC_TAIL
    )
    workload = make_requests(templates, requests, seed=seed)
    config = EmulatorConfig(hardware=hardware, models=tuple(MODELS), time_scale=TIME_SCALE, seed=seed)
    print(
        f"{requests} templated chat requests to {', '.join(MODELS)} on the emulator's {hardware} profile, "
        f"sent twice with the official ollama client (matcher and tuner on embedded Postgres):"
    )
    with tempfile.TemporaryDirectory(prefix="optimizer-demo-") as tmp:
        data_dir = Path(tmp) / "pg"
        async with running_services(data_dir) as services:
            print(f"  1. Ollama's defaults, with OPT_APPLY_OPTIONS=false (tuner {services.tuner}):")
            async with start_emulator(config) as emu:
                baseline, _ = await _through_gateway(emu, services, workload, stream_every, apply_options=False)
                default_ctx = emu.engine.default_num_ctx
        print("  2. the optimizer, its services restarted on the same database (what they learned is stored):")
        async with running_services(data_dir) as services, start_emulator(config) as emu:
            optimized, decided = await _through_gateway(emu, services, workload, stream_every, apply_options=True)
            runners = {
                model: {k: v for k, v in (emu.runner_options(model) or {}).items() if k in ("num_ctx", "num_batch")}
                or "not loaded"
                for model in MODELS
            }
            print(f"\nAs the emulator counted them (Ollama's default context here: {default_ctx}):\n")
            print(comparison(baseline, optimized))
            print(f"\nRun 2: {_decisions(decided)}.")
            print(
                "Runner options at the end of run 2: "
                + "; ".join(f"{model} {options}" for model, options in runners.items())
            )
            print(
                "\nThe optimizer's own account of both runs (run 1's requests passed through; its latencies are "
                f"wall-clock seconds of the emulator, which runs {TIME_SCALE}x faster than the simulated time above):"
            )
            await _cli("stats", "--address", services.tuner)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=120, help="requests per run (default: 120)")
    parser.add_argument("--stream-every", type=int, default=3, help="stream every Nth request, 0 = never (default: 3)")
    parser.add_argument(
        "--hardware",
        default="gpu-8gb",
        help="emulator hardware profile: gpu-8gb, gpu-24gb, gpu-80gb, cpu (default: gpu-8gb)",
    )
    parser.add_argument("--seed", type=int, default=11, help="workload and emulator seed (default: 11)")
    args = parser.parse_args(argv)
    quiet_runtime_dir_warning()
    sys.exit(asyncio.run(run(args.requests, args.stream_every, args.hardware, args.seed)))


if __name__ == "__main__":
    main()
