"""Where a request's time went on the emulator: its own processing, waiting for a runner to load, and waiting
behind other requests in Ollama's queue (the slot busy).

A request's time = wait (arrival -> runner slot acquired) + service (prompt processing + decode). The part of
the wait during which a runner was loading is load wait; the rest is queue wait. Summed over the requests the
defaults served intact, the three parts tell a context policy's costs (a slower service: spill or lost caches;
load wait: reloads and evictions) from the cost of serving other requests whole (queue wait behind them).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.ollama_sim import Emulator, RequestRecord

PARTS = ("service_s", "load_wait_s", "queue_wait_s")


@dataclass(frozen=True)
class TimeSplit:
    service_s: float
    load_wait_s: float
    queue_wait_s: float


def load_intervals(emulator: Emulator) -> list[tuple[float, float]]:
    """[start, ready) of every runner load of the run, merged where they overlap (loads are serialised)."""
    engine = emulator.engine
    spans = sorted((r.load_start, r.ready_at) for r in [*engine.retired, *engine.runners.values()])
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def split(record: RequestRecord, loads: list[tuple[float, float]]) -> TimeSplit:
    """The request's service time, and its wait split into loading and queueing."""
    service = record.prompt_eval_s + record.eval_s
    wait = max(0.0, record.total_s - service)
    start, end = record.arrival_s, record.arrival_s + wait
    loading = sum(max(0.0, min(end, b) - max(start, a)) for a, b in loads if a < end and b > start)
    return TimeSplit(service, min(wait, loading), max(0.0, wait - loading))


def intact_time(
    records: list[RequestRecord | None], loads: list[tuple[float, float]], keep: list[bool]
) -> dict[str, float]:
    """Mean seconds per kept request of each part (``keep``: the requests the defaults served intact)."""
    parts = [split(r, loads) for r, k in zip(records, keep) if k and r is not None and r.status == 200]
    if not parts:
        return {}
    return {name: round(sum(getattr(p, name) for p in parts) / len(parts), 3) for name in PARTS}
