"""What any context policy can reach on the chat workload with one model that spills: the trade-off between
reloads and the latency of the requests the defaults served intact, for plans made in hindsight.

    .venv/bin/python -m bench.chat_frontier --scenario gpu-8gb

Requests that need more than fits in VRAM (the long sessions' turns) must run at a large context, which
spills layers to the CPU; every other request runs fastest at the largest context that fits. Between two such
long requests a plan either stays large (the requests in between run spilled) or returns and grows back (two
reloads). A plan knows every request in advance: it returns after a long request when the spill the requests
up to the next long one would pay exceeds ``threshold_s``, and stays large at the largest need of the long
requests it joins. Each plan runs on the emulator's engine with ``--concurrency`` closed-loop clients (each
sends its next request when its answer arrives, requests released in order), as ``bench.e2e`` does; the sweep
over thresholds gives the frontier. A policy that does not know the future cannot do better than the frontier.

``--free-reloads`` runs the same plans with loads a million times faster (a what-if, not a constant of the
emulator): a bound on what any plan that serves every request whole can reach, whatever its reloads cost. At
concurrency above 1 on one slot the requests the defaults served intact wait behind the long requests served
whole (the defaults cut them short), which no context choice removes.

    .venv/bin/python -m bench.chat_frontier --scenario gpu-8gb --concurrency 4 --free-reloads
"""

from __future__ import annotations

import argparse
import heapq
import json
from dataclasses import replace

from bench.e2e import SCENARIOS, Scenario, emulator_config, workload
from bench.ollama_sim import Emulator, ModelProfile, Sensitivity, perf
from bench.ollama_sim.prompt import prepare
from bench.workload import WorkloadRequest
from tuner_service.state import ladder, rung_for

BATCH = 512
THRESHOLDS_S = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, float("inf"))
FREE_LOADS = Sensitivity(load_rate=1e6)  # what-if: a load takes a millionth of its cited time


def needs(emulator: Emulator, requests: list[WorkloadRequest]) -> list[int]:
    """Tokens each request needs whole: its prompt, its answer and one."""
    engine = emulator.engine
    out = []
    for r in requests:
        model = engine.models[r.model]
        prompt = prepare(r.messages, model, model.train_ctx, 4, True, True).sent_tokens
        out.append(prompt + engine.output_tokens(r.model, r.messages) + 1)
    return out


def largest_fitting(emulator: Emulator, model: ModelProfile, rungs: list[int]) -> int:
    hw = emulator.engine.hw
    fitting = [c for c in rungs if perf.place(model, hw, c, BATCH, -1, hw.vram_bytes).gpu_layers == model.layers]
    return fitting[-1] if fitting else rungs[0]


def service_s(emulator: Emulator, model: ModelProfile, ctx: int, tokens: int) -> float:
    """Seconds to process a prompt of ``tokens`` (no cache) and a 128-token answer at ``ctx``."""
    hw = emulator.engine.hw
    pl = perf.place(model, hw, ctx, BATCH, -1, hw.vram_bytes)
    return perf.prompt_seconds(model, hw, pl, 0, tokens, BATCH) + sum(perf.decode_seconds(model, hw, pl, tokens, 128))


def plan(
    emulator: Emulator, requests: list[WorkloadRequest], need: list[int], intact: list[bool], threshold_s: float
) -> list[int]:
    """The context of every request, planned per model (``plan_model``)."""
    ctx = [0] * len(requests)
    for name in {r.model for r in requests}:
        mine = [i for i, r in enumerate(requests) if r.model == name]
        picked = plan_model(
            emulator, [requests[i] for i in mine], [need[i] for i in mine], [intact[i] for i in mine], threshold_s
        )
        for i, c in zip(mine, picked):
            ctx[i] = c
    return ctx


def plan_model(
    emulator: Emulator, requests: list[WorkloadRequest], need: list[int], intact: list[bool], threshold_s: float
) -> list[int]:
    """One model's requests: the largest fitting rung, or the long requests' context while staying."""
    model = emulator.engine.models[requests[0].model]
    rungs = ladder(1024, 262144, model.train_ctx, 4)
    small = largest_fitting(emulator, model, rungs)
    ctx = [max(small, rung_for(n, rungs)) for n in need]
    longs = [i for i, c in enumerate(ctx) if c > small]
    for a, b in zip(longs, [*longs[1:], len(requests)]):
        big = max(ctx[a], ctx[b] if b < len(requests) else 0)
        spill = sum(
            service_s(emulator, model, big, need[i]) - service_s(emulator, model, small, need[i])
            for i in range(a + 1, b)
            if intact[i]
        )
        if spill <= threshold_s:
            for i in range(a + 1, b):
                ctx[i] = big
    for i in reversed(range(len(requests) - 1)):  # a stay holds the largest need of the long requests it joins
        if ctx[i] > small and ctx[i + 1] > ctx[i]:
            ctx[i] = ctx[i + 1]
    return ctx


def replay(
    scenario: Scenario,
    requests: list[WorkloadRequest],
    contexts: list[int] | None,
    concurrency: int = 1,
    sensitivity: Sensitivity = Sensitivity(),
) -> tuple[list, Emulator]:
    """Requests from ``concurrency`` closed-loop clients on a fresh engine (None: Ollama's defaults); the
    records (latency: arrival to answer) and the emulator."""
    emulator = Emulator(replace(emulator_config(scenario), sensitivity=sensitivity))
    engine, t = emulator.engine, 0.0
    engine.now = lambda: t  # type: ignore[method-assign]
    free = [(0.0, client) for client in range(concurrency)]
    records = []
    for k, r in enumerate(requests):
        t, client = heapq.heappop(free)
        options = {} if contexts is None else {"num_ctx": contexts[k], "num_batch": BATCH}
        record = engine.schedule("chat", r.model, r.messages, options, None, None, None).record
        records.append(record)
        heapq.heappush(free, (record.arrival_s + record.total_s, client))
    return records, emulator


def frontier(
    scenario: Scenario, concurrency: int = 1, free_reloads: bool = False, thresholds: tuple[float, ...] = THRESHOLDS_S
) -> list[dict]:
    requests, _ = workload(scenario, None, "chat")
    defaults, probe = replay(scenario, requests, None, concurrency)
    intact = [not r.truncated for r in defaults]
    base = sum(r.total_s for r, k in zip(defaults, intact) if k)
    need = needs(probe, requests)
    rows = []
    for threshold in thresholds:
        contexts = plan(probe, requests, need, intact, threshold)
        records, emulator = replay(
            scenario, requests, contexts, concurrency, FREE_LOADS if free_reloads else Sensitivity()
        )
        reloads = sum(emulator.engine.reloads.values())
        rows.append(
            {
                "threshold_s": threshold,
                "truncated": sum(r.truncated for r in records),
                "reloads": reloads,
                "reloads_pct": round(100 * reloads / len(requests), 1),
                "intact_ratio": round(sum(r.total_s for r, k in zip(records, intact) if k) / base, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", default="gpu-8gb", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--concurrency", type=int, default=1, help="closed-loop clients (one slot)")
    parser.add_argument("--free-reloads", action="store_true", help="loads take no time: a bound for any plan")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS_S, help="seconds (default: a sweep)")
    args = parser.parse_args()
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    for row in frontier(scenario, args.concurrency, args.free_reloads, tuple(args.thresholds)):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
