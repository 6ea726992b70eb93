"""Figures of one benchmark run (one arm, scenario and concurrency), the markdown table and the plots."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from bench.e2e_blame import load_intervals
from bench.e2e_drive import Result
from bench.ollama_sim import Emulator

GiB = 1024**3
BUCKET = 100  # learning curve: requests per point
SETTLE_AFTER = 10  # "after the first 10 requests of each template"
REVISIT_WINDOW = 10  # a model's runner back at a context it left within this many requests


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (the emulator's summary uses the same rule)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def latencies(results: list[Result]) -> list[float | None]:
    """Per request (workload order): simulated latency + the real time of the path to the emulator (client
    HTTP, and for the optimizer the whole gateway: parse, Match, Recommend, relay); None when it failed."""
    out: list[float | None] = [None] * len(results)
    for k, result in enumerate(results):
        if result.record is not None and result.record.status == 200 and result.status == 200:
            out[k] = result.record.total_s + result.hop_s
    return out


def settled(results: list[Result]) -> list[bool]:
    """True for templated requests after the first SETTLE_AFTER of their template (workload order)."""
    seen: Counter[int] = Counter()
    flags = []
    for result in results:
        tid = result.request.template_id
        seen[tid] += 1
        flags.append(tid != 0 and seen[tid] > SETTLE_AFTER)
    return flags


def figures(results: list[Result], emulator: Emulator, long_doc_ids: set[int]) -> dict:
    """All per-run figures; latencies in simulated seconds plus the measured real path to the emulator."""
    lat = latencies(results)
    ok = [x for x in lat if x is not None]
    records = [r.record for r in results if r.record is not None]
    truncated = sum(r.truncated for r in records)
    long_docs = [r for r in results if r.request.template_id in long_doc_ids and r.record is not None]
    ends = [r.arrival_s + r.total_s for r in records]
    span = (max(ends) - min(r.arrival_s for r in records)) if records else 0.0
    memory = emulator.engine.memory_stats(until=max(ends) if ends else 0.0)
    curve = []
    for start in range(0, len(results), BUCKET):
        chunk = results[start : start + BUCKET]
        chunk_lat = [x for x in lat[start : start + BUCKET] if x is not None]
        curve.append(
            {
                "from": start,
                "latency_mean_s": round(statistics.fmean(chunk_lat), 3) if chunk_lat else None,
                "reloads": sum(1 for r in chunk if r.record is not None and r.record.reloaded),
                "loads": sum(1 for r in chunk if r.record is not None and r.record.loaded),
            }
        )
    overhead_ms = [r.hop_s * 1000 for r in results]
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "p50_s": round(quantile(ok, 0.50), 3),
        "p95_s": round(quantile(ok, 0.95), 3),
        "p99_s": round(quantile(ok, 0.99), 3),
        "mean_s": round(statistics.fmean(ok), 3) if ok else 0.0,
        "truncated": truncated,
        "truncated_pct": round(100 * truncated / max(1, len(records)), 2),
        "long_doc_requests": len(long_docs),
        "long_doc_truncated": sum(r.record.truncated for r in long_docs),
        "reloads": sum(emulator.reloads.values()),
        "loads": sum(emulator.loads.values()),
        "evictions": sum(emulator.evictions.values()),
        "revisits": revisits(records),
        "kv_gib_mean": round(memory["kv_mean_bytes"] / GiB, 3),
        "kv_gib_peak": round(memory["kv_peak_bytes"] / GiB, 3),
        "vram_gib_mean": round(memory["vram_mean_bytes"] / GiB, 3),
        "vram_gib_peak": round(memory["vram_peak_bytes"] / GiB, 3),
        "tokens_per_s": round(sum(r.eval_count for r in records) / span, 2) if span > 0 else 0.0,
        "overhead_ms_p50": round(quantile(overhead_ms, 0.5), 3),
        "overhead_ms_p99": round(quantile(overhead_ms, 0.99), 3),
        "max_num_ctx": max_contexts(records),
        "curve": curve,
        "_latencies": lat,
        "_truncated": [r.record is not None and r.record.truncated for r in results],
        "_records": [r.record for r in results],
        "_loads": load_intervals(emulator),
    }


def max_contexts(records: list) -> dict[str, int]:
    """The largest context each model was loaded with during the run."""
    largest: dict[str, int] = {}
    for r in records:
        if r.runner:
            largest[r.model] = max(largest.get(r.model, 0), int(r.runner["num_ctx"]))
    return dict(sorted(largest.items()))


def revisits(records: list, window: int = REVISIT_WINDOW) -> int:
    """Loads that brought a model's runner back to a context it had left within ``window`` requests."""
    current: dict[str, int] = {}
    left: dict[tuple[str, int], int] = {}
    count = 0
    for index, record in enumerate(records):
        ctx = record.runner.get("num_ctx", 0) if record.runner else 0
        previous = current.get(record.model)
        if previous is not None and ctx != previous:
            left[(record.model, previous)] = index
            count += index - left.get((record.model, ctx), -window - 1) <= window
        current[record.model] = ctx
    return count


TABLE_HEADER = (
    "| scenario | conc | arm | p50 s | p50 intact s | mean s (none truncated) | p95 s | p99 s | truncated "
    "| reloads | loads | evictions | KV GiB mean/peak | VRAM GiB mean/peak | tok/s | hop ms p50/p99 "
    "| vs oracle (settled) | learning: requests / extra s / gap after |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.1f}%"


def table_row(scenario: str, conc: int, arm: str, f: dict) -> str:
    untruncated = f.get("mean_untruncated_s")
    learning = (
        f"{f['learning_requests']} / {f['learning_extra_s']:.0f} / {_pct(f['gap_after_learning'])}"
        if "learning_requests" in f
        else ""
    )
    return (
        f"| {scenario} | {conc} | {arm} | {f['p50_s']:.2f} | {f.get('p50_intact_s', 0.0):.2f} "
        f"| {'' if untruncated is None else f'{untruncated:.2f}'} | {f['p95_s']:.2f} | {f['p99_s']:.2f} "
        f"| {f['truncated']} ({f['truncated_pct']:.1f}%) | {f['reloads']} | {f['loads']} | {f['evictions']} "
        f"| {f['kv_gib_mean']:.2f}/{f['kv_gib_peak']:.2f} | {f['vram_gib_mean']:.2f}/{f['vram_gib_peak']:.2f} "
        f"| {f['tokens_per_s']:.1f} | {f['overhead_ms_p50']:.2f}/{f['overhead_ms_p99']:.2f} "
        f"| {_pct(f.get('oracle_gap'))} | {learning} |"
    )


def plot(results: dict, out_dir: Path) -> list[Path]:  # results as written to e2e.json
    """Per scenario: p50 by concurrency and arm; learning curves at the lowest concurrency: latency, and reloads
    (solid) and all runner loads incl. evictions and expiries (dashed) per 100 requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for scenario, by_conc in results.items():
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        concs = sorted(by_conc, key=int)
        for arm in next(iter(by_conc.values())):
            line = axes[0].plot(
                [int(c) for c in concs], [by_conc[c][arm]["p50_s"] for c in concs], marker="o", label=arm
            )[0]
            curve = by_conc[concs[0]][arm]["curve"]
            xs = [p["from"] for p in curve]
            axes[1].plot(xs, [p["latency_mean_s"] for p in curve], marker=".", label=arm)
            axes[2].plot(xs, [p["reloads"] + 0.0 for p in curve], marker=".", label=f"{arm} reloads")
            axes[2].plot(xs, [p["loads"] + 0.0 for p in curve], ls="--", color=line.get_color(), alpha=0.6)
        axes[0].set(title=f"{scenario}: p50 latency", xlabel="concurrency", ylabel="s (simulated)", xscale="log")
        axes[0].set_xticks([int(c) for c in concs], [str(c) for c in concs])
        axes[0].minorticks_off()
        axes[1].set(
            title=f"learning curve, concurrency {concs[0]}", xlabel="request index (per 100)", ylabel="mean latency s"
        )
        axes[2].set(
            title="reloads (solid), all loads (dashed) per 100",
            xlabel="request index (per 100)",
            ylabel="per 100 requests",
            yscale="symlog",
        )
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"e2e_{scenario}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
