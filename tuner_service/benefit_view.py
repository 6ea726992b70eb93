"""The benefit figures of a Summary as `ollama-optimizer stats` prints them: one row per model and a total,
then what each column means (definitions in ollama_optimizer/benefit.py). A difference is worded by its
sign ("saved" / "more"): never a negative "saved"; a figure against a default only assumed is unknown."""

from __future__ import annotations

from typing import Any

from ollama_optimizer.benefit import MIN_SPEED_SAMPLES
from ollama_optimizer.cli_support import table
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from .default_context import ASSUMED, OPERATOR

UNKNOWN = "—"  # a figure that rests on a default context only assumed
NOTES = (
    "truncations prevented: optimized requests, not truncated, whose prompt was longer than the context Ollama\n"
    "  would have used (the client's num_ctx, else Ollama's default: learned from /api/ps or the operator's\n"
    f"  TUNER_DEFAULT_NUM_CTX). {UNKNOWN} (or >= n): requests optimized while the default was only assumed; whether\n"
    "  Ollama would have cut them is unknown.",
    "reloads seen: runner loads (Ollama's clock); by the optimizer: those after an option change it made;\n"
    "  the clients' options cause: reloads their own option changes would cause without the optimizer.",
    "prompt time: optimized requests measured, against an estimate at the prompt speed Ollama showed for the\n"
    "  model with the clients' own options (same prompt size class); only once that speed has "
    f"{MIN_SPEED_SAMPLES} samples.",
)


def size(value: float) -> str:
    """Bytes as B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def prevented(b: tuner_pb2.Benefit) -> str:
    """Truncations prevented: a count against known baselines, a lower bound or unknown (``UNKNOWN``)."""
    if not b.baseline_unknown_requests:
        return str(b.truncations_prevented)
    return f">= {b.truncations_prevented}" if b.truncations_prevented else UNKNOWN


def kv_change(b: tuner_pb2.Benefit) -> str:
    if not b.kv_bytes_default:
        return f"{UNKNOWN} -> {size(b.kv_bytes_loaded)}" if b.kv_bytes_loaded else UNKNOWN
    delta = b.kv_bytes_loaded - b.kv_bytes_default
    word = "saved" if delta < 0 else "more"
    change = f" ({size(abs(delta))} {word})" if delta else ""
    return f"{size(b.kv_bytes_default)} -> {size(b.kv_bytes_loaded)}{change}"


def prompt_change(b: tuner_pb2.Benefit) -> str:
    if not b.prompt_estimated_requests:
        return "no estimate yet"
    delta = b.prompt_seconds_baseline - b.prompt_seconds
    word = "saved" if delta >= 0 else "more"
    return (
        f"{b.prompt_seconds_baseline:.1f} s -> {b.prompt_seconds:.1f} s ({abs(delta):.1f} s {word}, "
        f"{b.prompt_estimated_requests} requests)"
    )


def context_change(b: tuner_pb2.Benefit) -> str:
    if not b.default_num_ctx:
        return f"unknown -> {b.loaded_num_ctx}" if b.loaded_num_ctx else "-"
    basis = f" ({b.default_num_ctx_basis})" if b.default_num_ctx_basis in (ASSUMED, OPERATOR) else ""
    return f"{b.default_num_ctx}{basis} -> {b.loaded_num_ctx or b.default_num_ctx}"


FIGURES = (
    "requests",
    "optimized",
    "truncations prevented",
    "truncated anyway",
    "reloads seen",
    "  by the optimizer",
    "reloads the clients' options cause",
    "num_ctx default -> now",
    "KV memory default -> now",
    "prompt time baseline -> measured",
)


def column(b: tuner_pb2.Benefit, context: str) -> tuple[object, ...]:
    """One model's (or the total's) figures in FIGURES order."""
    return (
        b.requests,
        f"{b.optimized} ({b.optimized / b.requests:.0%})" if b.requests else 0,
        prevented(b),
        b.truncated,
        b.runner_loads,
        b.loads_by_optimizer,
        b.loads_by_clients_baseline,
        context,
        kv_change(b),
        prompt_change(b),
    )


def render(response: tuner_pb2.SummaryResponse) -> str:
    """Figures as rows, one column per model (``model@host`` off the default host), then the total."""
    names = [m.model + (f"@{m.ollama_host}" if m.ollama_host else "") for m in response.models]
    columns = [column(m.benefit, context_change(m.benefit)) for m in response.models]
    if len(response.models) != 1:
        names.append("total")
        columns.append(column(response.benefit, ""))
    rows = [("", *names), *[(figure, *values) for figure, *values in zip(FIGURES, *columns)]]
    assumed = [name for name, m in zip(names, response.models) if m.benefit.default_num_ctx_basis == ASSUMED]
    notes = list(NOTES)
    if assumed:
        notes.append(
            f"(assumed): Ollama's default context for {', '.join(assumed)} by Ollama's rule (its version and the\n"
            "  GPU the gateway sees): /api/ps has not shown it after a request sent without num_ctx, so the figures\n"
            f"  against it are unknown ({UNKNOWN}). A gateway away from Ollama's GPU sees none (the smallest tier):\n"
            "  any request passed through learns it, or set TUNER_DEFAULT_NUM_CTX to the server's default (its\n"
            "  OLLAMA_CONTEXT_LENGTH, or CONTEXT in `ollama ps`)."
        )
    return table(rows) + "\n\n" + "\n".join(notes)


def json_unknowns(data: dict[str, Any]) -> dict[str, Any]:
    """A Summary as JSON (``as_dict``) with the figures that rest on an assumed default as null: truncations
    prevented (its count against known baselines stays in ``truncations_prevented_at_least``) and the KV memory
    of the default."""
    for benefit in [data["benefit"], *(m["benefit"] for m in data["models"])]:
        benefit["truncations_prevented_at_least"] = benefit["truncations_prevented"]
        if int(benefit["baseline_unknown_requests"]):
            benefit["truncations_prevented"] = None
        if not int(benefit["kv_bytes_default"]):
            benefit["kv_bytes_default"] = None
    if int(data["benefit"]["baseline_unknown_requests"]):
        data["truncations_prevented"] = None
    return data
