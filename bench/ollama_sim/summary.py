"""Per-run figures shared by the emulator and the real llama.cpp backend (same names, same meaning)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from .engine import RequestRecord


class Backend(Protocol):
    requests: list[RequestRecord]
    loads: Counter[str]
    reloads: Counter[str]
    evictions: Counter[str]

    @property
    def truncated_requests(self) -> int: ...

    def memory_stats(self) -> dict[str, Any]: ...


def _quantile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))] if sorted_values else 0.0


def run_summary(backend: Backend) -> dict[str, Any]:
    """Requests, errors, loads, reloads, evictions, truncations, latency/TTFT p50/p95 and memory."""
    ok = [r for r in backend.requests if r.status == 200 and r.done_reason not in ("load", "unload")]
    latency, ttft = sorted(r.total_s for r in ok), sorted(r.ttft_s for r in ok)
    return {
        "requests": len(backend.requests),
        "errors": sum(r.status != 200 for r in backend.requests),
        "loads": sum(backend.loads.values()),
        "reloads": sum(backend.reloads.values()),
        "evictions": sum(backend.evictions.values()),
        "truncated_requests": backend.truncated_requests,
        "latency_p50_s": _quantile(latency, 0.5),
        "latency_p95_s": _quantile(latency, 0.95),
        "ttft_p50_s": _quantile(ttft, 0.5),
        "ttft_p95_s": _quantile(ttft, 0.95),
        **backend.memory_stats(),
    }
