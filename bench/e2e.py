"""End-to-end benchmark (issue 6): Ollama defaults vs the naive per-request num_ctx vs this optimizer vs an
oracle, on the same seeded workload and the same emulator settings, in one run.

    .venv/bin/python -m bench.e2e            # full: 3 scenarios x concurrency 1, 2, 4, 8 (make bench)
    .venv/bin/python -m bench.e2e --quick    # < 3 minutes; fewer requests, concurrency 1 and 4; no files
    .venv/bin/python -m bench.e2e --quick --count-mode uncached   # Ollama counting as 0.30.0 did

Latencies are the emulator's simulated seconds (on a virtual clock, bench/e2e_clock.py) plus, for the
optimizer, the measured wall-clock request-path overhead of the plugin core (prepare(): Match + Recommend +
decision, timed per request in the gateway). Writes bench/results/e2e.json, e2e.md and e2e_<scenario>.png; the last
line printed is one JSON object: per scenario and arm p50_s, p95_s, truncated, reloads, kv_gib_mean
(concurrency 1) and the same per concurrency under "by_concurrency".
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.e2e_arms import ARMS, Naive, Oracle, Passthrough, optimizer_stack, oracle_contexts
from bench.e2e_clock import virtual_emulator
from bench.e2e_drive import Result, drive
from bench.e2e_report import TABLE_HEADER, figures, intact_p50, oracle_gap, plot, settled, table_row
from bench.ollama_sim import EmulatorConfig
from bench.ollama_sim.counts import COUNT_MODES
from bench.ollama_sim.output import default_output_tokens
from bench.workload import Request, make_requests, make_templates
from ollama_optimizer.embedded_pg import EmbeddedPostgres

RESULTS = Path(__file__).with_name("results")
SEED = 6
TEMPLATES = 32
ORACLE_BATCHES = (512, 1024, 2048)
DECIDED = frozenset({"applied", "tuner_passthrough", "nothing_to_apply", "low_confidence"})
KEYS = ("p50_s", "p95_s", "truncated", "reloads", "kv_gib_mean", "max_num_ctx")


@dataclass(frozen=True)
class Scenario:
    name: str
    hardware: str
    default_num_ctx: int | None  # None: Ollama's VRAM-tier default
    models: tuple[str, ...]  # templates are dealt round robin: a repeated name weights that model
    long_doc_models: tuple[str, ...]
    long_doc_tail: tuple[int, int]  # words
    represents: str


SCENARIOS = (
    Scenario("gpu-24gb", "gpu-24gb", None, ("qwen2.5:14b",) * 3 + ("llama3.1:8b",) * 2,
             ("llama3.1:8b", "llama3.1:8b"), (24_000, 34_000),
             "24 GB card, VRAM-tier default 32768: a 14B chat model (60% of templates) and an 8B model (40%, "
             "plus two long-document templates of ~26k-37k tokens) share one GPU."),
    Scenario("gpu-8gb", "gpu-8gb", 4096, ("llama3.1:8b",), ("llama3.1:8b",), (6_000, 10_000),
             "8 GB card, default 4096: one 8B model; heads up to ~6.5k tokens and one long-document "
             "template (~7k-11k tokens) exceed the default."),
    Scenario("cpu", "cpu", 4096, ("smollm2:135m", "smollm2:135m", "llama3.2:3b"), ("llama3.2:3b",),
             (6_000, 10_000),
             "CPU-only host (24 GiB RAM), default 4096: a 135M model (2/3 of templates) and a 3B model "
             "(1/3, plus one long-document template)."),
)


def workload(scenario: Scenario, n: int) -> tuple[list[Request], set[int]]:
    templates = make_templates(list(scenario.models), TEMPLATES, SEED, long_doc_models=scenario.long_doc_models,
                               long_doc_tail=scenario.long_doc_tail)
    long_ids = {t.template_id for t in templates if t.template_id > TEMPLATES}
    return make_requests(templates, n, SEED), long_ids


def emulator_config(scenario: Scenario, count_mode: str = "full") -> EmulatorConfig:
    models = tuple(sorted(set(scenario.models) | set(scenario.long_doc_models)))
    return EmulatorConfig(hardware=scenario.hardware, models=models, default_num_ctx=scenario.default_num_ctx,
                          seed=SEED, count_mode=count_mode)


async def run_arm(scenario: Scenario, arm: str, requests: list[Request], concurrency: int, long_ids: set[int],
                  pg: EmbeddedPostgres, oracle: Oracle | None, plugin: dict | None = None,
                  count_mode: str = "full") -> dict:
    """One arm on a fresh emulator (and, for the optimizer, a fresh database)."""
    async with AsyncExitStack() as stack:
        emulator, clock = await stack.enter_async_context(virtual_emulator(emulator_config(scenario, count_mode)))
        url, settle = emulator.url, None
        policy: object
        if arm == "optimizer":
            url, policy = await stack.enter_async_context(optimizer_stack(pg, emulator.url, plugin))
            settle = policy.settle  # type: ignore[attr-defined]
        elif arm == "naive":
            policy = Naive()
        elif arm == "oracle":
            assert oracle is not None
            policy = oracle
        else:
            policy = Passthrough()
        results = await drive(requests, concurrency, url, emulator, clock, policy.options_for,  # type: ignore[attr-defined]
                              policy.completed, settle)  # type: ignore[attr-defined]
        if arm != "optimizer":
            return figures(results, emulator, [0.0] * len(results), long_ids)
        decisions = policy.core.decisions  # type: ignore[attr-defined]
        f = figures(results, emulator, [d[3] for d in decisions], long_ids)  # + the core's measured prepare()
        f["decision_reasons"] = dict(Counter(reason for reason, *_rest in decisions))
        # Truncations of requests the tuner decided, apart from those a service failure (timeout, open
        # breaker, sticky options) sent on without a decision: on a loaded host the request path fails open.
        f["truncated_decided"] = sum(1 for r, (reason, *_rest) in zip(results, decisions)
                                     if r.record is not None and r.record.truncated and reason in DECIDED)
        f["_decisions"], f["_results"] = decisions, results
        return f


async def choose_oracle(scenario: Scenario, requests: list[Request], long_ids: set[int],
                        pg: EmbeddedPostgres) -> Oracle:
    """Hindsight: per-model contexts that hold every request; the num_batch with the lowest mean latency."""
    contexts = oracle_contexts(requests, default_output_tokens(SEED))
    best: tuple[float, Oracle] | None = None
    for batch in ORACLE_BATCHES:
        candidate = Oracle(contexts, batch)
        f = await run_arm(scenario, "oracle", requests, 1, long_ids, pg, candidate)
        if f["truncated"] == 0 and (best is None or f["mean_s"] < best[0]):
            best = (f["mean_s"], candidate)
    assert best is not None, "no oracle configuration avoids truncation"
    return best[1]


async def run_scenarios(pg: EmbeddedPostgres, scenarios: list[Scenario], n: int, levels: tuple[int, ...],
                        plugin: dict | None = None, count_mode: str = "full") -> dict:
    """Every scenario x concurrency x arm on ``pg``; ``plugin`` overrides the gateway's PluginConfig fields."""
    results: dict[str, dict[int, dict[str, dict]]] = {}
    for scenario in scenarios:
        requests, long_ids = workload(scenario, n)
        flags = settled([Result(r, None, 0) for r in requests])
        oracle = await choose_oracle(scenario, requests, long_ids, pg)
        results[scenario.name] = {}
        for conc in levels:
            by_arm: dict[str, dict] = {}
            for arm in ARMS:
                by_arm[arm] = await run_arm(scenario, arm, requests, conc, long_ids, pg, oracle, plugin, count_mode)
            intact = [x is not None and not truncated for x, truncated
                      in zip(by_arm["passthrough"]["_latencies"], by_arm["passthrough"]["_truncated"])]
            for arm in ARMS:
                by_arm[arm]["oracle_gap"] = oracle_gap(by_arm[arm], by_arm["oracle"], flags)
                by_arm[arm]["p50_intact_s"] = intact_p50(by_arm[arm], intact)
            by_arm["oracle"]["config"] = {"num_ctx": oracle.num_ctx, "num_batch": oracle.num_batch}
            results[scenario.name][conc] = {arm: by_arm[arm] for arm in ARMS}
    return results


async def run(quick: bool, only: str | None = None, requests_n: int | None = None,
              concurrencies: tuple[int, ...] | None = None, count_mode: str = "full") -> dict:
    """The benchmark on its own embedded Postgres; a full run writes bench/results/ (--quick only prints)."""
    n = requests_n or (250 if quick else 1000)
    levels = concurrencies or ((1, 4) if quick else (1, 2, 4, 8))
    scenarios = [s for s in SCENARIOS if only in (None, s.name)]
    with tempfile.TemporaryDirectory(prefix="e2e-pg-") as tmp:
        pg = await asyncio.to_thread(EmbeddedPostgres, Path(tmp) / "pg")
        try:
            results = await run_scenarios(pg, scenarios, n, levels, count_mode=count_mode)
        finally:
            await asyncio.to_thread(pg.stop)
    if not quick and count_mode == "full":
        write_outputs(results, scenarios, RESULTS, n)
    return results


def summary(results: dict) -> dict:
    """The last-line JSON: per scenario and arm the KEYS at the lowest concurrency, and per concurrency."""
    out: dict = {}
    for scenario, by_conc in results.items():
        first = min(by_conc)
        out[scenario] = {}
        for arm in ARMS:
            keys = [k for k in (*KEYS, "truncated_decided") if k in by_conc[first][arm]]
            entry = {k: by_conc[first][arm][k] for k in keys}
            entry["by_concurrency"] = {str(c): {k: by_conc[c][arm][k] for k in keys} for c in sorted(by_conc)}
            out[scenario][arm] = entry
    return out


def write_outputs(results: dict, scenarios: list[Scenario], out_dir: Path, n: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {s: {c: {a: {k: v for k, v in f.items() if not k.startswith("_")} for a, f in by_arm.items()}
                 for c, by_arm in by_conc.items()} for s, by_conc in results.items()}
    (out_dir / "e2e.json").write_text(json.dumps(clean, indent=1) + "\n")
    lines = [f"Requests per run: {n}. Latencies: simulated seconds (+ the measured request-path overhead of the plugin core for the optimizer).",
             "", TABLE_HEADER]
    for scenario, by_conc in results.items():
        for conc, by_arm in sorted(by_conc.items()):
            lines += [table_row(scenario, conc, arm, f) for arm, f in by_arm.items()]
    lines += ["", *[f"- **{s.name}**: {s.represents}" for s in scenarios]]
    (out_dir / "e2e.md").write_text("\n".join(lines) + "\n")
    plot(json.loads(json.dumps(clean)), out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, concurrency 1 and 4 (< 3 minutes)")
    parser.add_argument("--scenario", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--requests", type=int)
    parser.add_argument("--concurrency", type=int, nargs="+")
    parser.add_argument("--count-mode", choices=sorted(COUNT_MODES), default="full",
                        help="how the emulated Ollama reports prompt_eval_count (the version it mirrors)")
    args = parser.parse_args()
    started = time.monotonic()
    results = asyncio.run(run(args.quick, args.scenario, args.requests,
                              tuple(args.concurrency) if args.concurrency else None, args.count_mode))
    print(f"wall {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(json.dumps(summary(results)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
