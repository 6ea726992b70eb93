"""``make demo``: one templated workload sent twice with the official ``ollama`` client, to the Ollama emulator
alone (Ollama's defaults) and through the gateway (the real matcher + tuner on embedded Postgres), each
against a fresh emulator; the emulator's own account of both side by side, then ``ollama-optimizer stats``
(the optimizer's measurement of the same run, against the baseline it infers). Run through bench/demo.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _passthrough_reasons() -> str:
    """The gateway's passthroughs by reason, e.g. "9 (no_data 6, low_confidence 3)"."""
    counts = {
        sample.labels["reason"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "optimizer_plugin_passthrough"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    }
    reasons = ", ".join(f"{reason} {count:.0f}" for reason, count in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{sum(counts.values()):.0f}" + (f" ({reasons})" if reasons else "")


async def _cli(*args: str) -> None:
    """Run an ``ollama-optimizer`` command as an operator would and show its output."""
    print(f"\n$ ollama-optimizer {' '.join(args)}")
    sys.stdout.flush()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_optimizer.cli", *args, env={**os.environ, "OPTIMIZER_LOG_LEVEL": "WARNING"}
    )
    await proc.wait()


async def run(requests: int, stream_every: int, hardware: str, seed: int) -> int:
    templates = make_templates(
        MODELS, 4, seed=seed, shifting=False, long_doc_models=(MODELS[1],), long_doc_tail=LONG_DOC_TAIL
    )
    workload = make_requests(templates, requests, seed=seed)
    config = EmulatorConfig(hardware=hardware, models=tuple(MODELS), time_scale=TIME_SCALE, seed=seed)
    print(
        f"{requests} templated chat requests to {', '.join(MODELS)} on the emulator's {hardware} profile, "
        f"sent twice with the official ollama client:"
    )
    async with start_emulator(config) as emu:
        print(f"  1. to the emulator alone ({emu.url}) ...")
        await _send(emu.url, workload, stream_every, None)
        baseline = _summary(emu)
        default_ctx = emu.engine.default_num_ctx
    async with running_services() as services, start_emulator(config) as emu:
        # Deadlines for a shared or cold machine: the production 50 ms budget would pass requests through while
        # the services warm up, and the demo shows what the optimizer does, not how it fails open.
        core = OptimizerCore(
            replace(load_config(), matcher_address=services.matcher, tuner_address=services.tuner, **DEMO_DEADLINES)
        )
        gateway = await start_gateway("127.0.0.1:0", emu.url, core=core)
        print(f"  2. through the gateway ({gateway.url}; matcher {services.matcher}, tuner {services.tuner}) ...")
        try:
            await _send(gateway.url, workload, stream_every, core)
            optimized = _summary(emu)
            runners = {
                model: {k: v for k, v in (emu.runner_options(model) or {}).items() if k in ("num_ctx", "num_batch")}
                or "not loaded"
                for model in MODELS
            }
        finally:
            await gateway.stop()
        print(f"\nAs the emulator counted them (Ollama's default context here: {default_ctx}):\n")
        print(comparison(baseline, optimized))
        print(
            f"\nThrough the optimizer: {_sample('optimizer_plugin_decisions_total', action='apply'):.0f} requests "
            f"optimized, passed through: {_passthrough_reasons()}."
        )
        print(
            "Runner options at the end, through the optimizer: "
            + "; ".join(f"{model} {options}" for model, options in runners.items())
        )
        print(
            "\nThe optimizer's own account of run 2 (its latencies are wall-clock seconds of the emulator, which "
            f"runs {TIME_SCALE}x faster than the simulated time above):"
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
