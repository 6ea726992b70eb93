"""End-to-end benchmark: this optimizer against what users do instead (Ollama's defaults, a server-wide
context of 8k or 32k, Aider's per-request rule, the original naive plugin) and against the best fixed
configurations in hindsight (per run and per phase), on the same seeded workload and emulator settings.

    .venv/bin/python -m bench.e2e                 # full: 3 scenarios x concurrency 1, 2, 4, 8 (make bench)
    .venv/bin/python -m bench.e2e --quick         # fewer requests, concurrency 1 and 4; no files
    .venv/bin/python -m bench.e2e --sensitivity   # gpu-24gb with the load and prompt rates varied
    .venv/bin/python -m bench.e2e --workload chat # chat sessions (bench/workload_chat.py); mix: the realistic mix
    .venv/bin/python -m bench.e2e --compat        # the workload through /v1/chat/completions: defaults vs optimizer
    .venv/bin/python -m bench.e2e --quick --count-mode uncached   # Ollama counting prompt tokens as 0.30.0 did

Latencies are the emulator's simulated seconds (on a virtual clock, bench/e2e_clock.py) plus the real time of
each request's path to the emulator, measured per request: the client's round trip less the time the emulator
held it (for the optimizer: HTTP into the gateway, JSON parse, Match, Recommend, relay and serialise). Arms
are described in bench/e2e_arms.py. A full run writes bench/results/e2e.json, e2e.md and e2e_<scenario>.png;
the last line printed is one JSON object: per scenario and arm the KEYS and COMPARED figures (concurrency 1)
and the KEYS per concurrency under "by_concurrency".
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
from dataclasses import dataclass, replace
from pathlib import Path

from bench.e2e_arms import ARMS, SERVER_CONTEXT, Optimizer, Oracle, PhaseOracle, enter_arm, oracle_contexts
from bench.e2e_clock import virtual_emulator
from bench.e2e_compare import compare
from bench.e2e_drive import NATIVE, Result, drive
from bench.e2e_report import TABLE_HEADER, figures, plot, quantile, settled, table_row
from bench.ollama_sim import MODELS, EmulatorConfig, Sensitivity
from bench.ollama_sim.counts import COUNT_MODES
from bench.ollama_sim.output import default_output_tokens
from bench.workload import WorkloadRequest, make_requests, make_templates
from bench.workload_chat import make_chat_requests
from bench.workload_mix import make_mix_requests
from ollama_optimizer.embedded_pg import EmbeddedPostgres

RESULTS = Path(__file__).with_name("results")
SENSITIVITY_GRID = {
    "cited": Sensitivity(),
    "load x0.5": Sensitivity(load_rate=0.5),
    "load x2": Sensitivity(load_rate=2.0),
    "load x4": Sensitivity(load_rate=4.0),
    "prompt x0.5": Sensitivity(prompt_rate=0.5),
    "prompt x2": Sensitivity(prompt_rate=2.0),
}
"""Load rate x2-x4 stands for weights served from the page cache; the cited constants are in CONSTANTS.md."""
SEED = 6
WEEK_S = 7 * 86_400.0
TEMPLATES = 32
ORACLE_BATCHES = (512, 1024, 2048)
DOC_MIN_TRAIN_CTX = 32768  # chat sessions paste documents only on models trained for long contexts
KEYS = (
    "p50_s",
    "p95_s",
    "truncated",
    "reloads",
    "kv_gib_mean",
    "requests",
    "loads",
    "evictions",
    "revisits",
    "max_num_ctx",
)
DECIDED = frozenset({"applied", "leased", "tuner_passthrough", "nothing_to_apply", "low_confidence"})
DIAGNOSIS = (
    "truncated_decided",
    "decision_reasons",
    "overhead_ms_p50",
    "mean_intact_s",
    "intact_time",
    "loads_gateway",
    "loads_tuner",
)
"""Per concurrency besides KEYS: truncations the tuner decided, why the core decided as it did, the path's cost."""
COMPARED = (
    "p50_intact_s",
    "mean_intact_s",
    "mean_untruncated_s",
    "oracle_gap",
    "learning_requests",
    "learning_extra_s",
    "gap_after_learning",
    "loads_gateway",
    "loads_tuner",
    "intact_time",
)
"""Figures that compare an arm with others; loads_gateway/loads_tuner: the optimizer's own count of loads."""
COMPAT_DOOR = "/v1/chat/completions"
COMPAT_ARMS = ("passthrough", "optimizer")


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
    Scenario(
        "gpu-24gb",
        "gpu-24gb",
        None,
        ("qwen2.5:14b",) * 3 + ("llama3.1:8b",) * 2,
        ("llama3.1:8b", "llama3.1:8b"),
        (24_000, 34_000),
        "24 GB card, VRAM-tier default 32768: a 14B chat model (60% of templates) and an 8B model (40%, "
        "plus two long-document templates of ~26k-37k tokens) share one GPU.",
    ),
    Scenario(
        "gpu-8gb",
        "gpu-8gb",
        4096,
        ("llama3.1:8b",),
        ("llama3.1:8b",),
        (6_000, 10_000),
        "8 GB card, default 4096: one 8B model; heads up to ~6.5k tokens and one long-document "
        "template (~7k-11k tokens) exceed the default.",
    ),
    Scenario(
        "cpu",
        "cpu",
        4096,
        ("smollm2:135m", "smollm2:135m", "llama3.2:3b"),
        ("llama3.2:3b",),
        (6_000, 10_000),
        "CPU-only host (24 GiB RAM), default 4096: a 135M model (2/3 of templates) and a 3B model "
        "(1/3, plus one long-document template).",
    ),
)


WORKLOADS = ("templates", "chat", "mix")
"""templates: templated prompts with heads of 200-6,000 words (bench/workload.py); chat: every turn of fifty
chat sessions (bench/workload_chat.py); mix: chat sessions, RAG, agents and one-offs in shifting phases
(bench/workload_mix.py)."""


def workload(scenario: Scenario, n: int | None, kind: str = "templates") -> tuple[list[WorkloadRequest], set[int]]:
    """The requests of a run (chat: all turns when ``n`` is None) and the ids of its long-document templates."""
    if kind == "chat":
        documents = tuple(m for m in set(scenario.models) if MODELS[m].train_ctx >= DOC_MIN_TRAIN_CTX)
        return make_chat_requests(
            list(scenario.models), SEED, big_models=scenario.long_doc_models, doc_models=documents, limit=n
        ), set()
    n = n or 1000
    if kind == "mix":
        return make_mix_requests(list(scenario.models), n, SEED, big_models=scenario.long_doc_models), set()
    templates = make_templates(
        list(scenario.models),
        TEMPLATES,
        SEED,
        long_doc_models=scenario.long_doc_models,
        long_doc_tail=scenario.long_doc_tail,
    )
    long_ids = {t.template_id for t in templates if t.template_id > TEMPLATES}
    return make_requests(templates, n, SEED), long_ids


def emulator_config(
    scenario: Scenario, sensitivity: Sensitivity = Sensitivity(), count_mode: str = "full"
) -> EmulatorConfig:
    models = tuple(sorted(set(scenario.models) | set(scenario.long_doc_models)))
    return EmulatorConfig(
        hardware=scenario.hardware,
        models=models,
        default_num_ctx=scenario.default_num_ctx,
        seed=SEED,
        sensitivity=sensitivity,
        count_mode=count_mode,
    )


async def run_arm(
    scenario: Scenario,
    arm: str,
    requests: list[WorkloadRequest],
    concurrency: int,
    long_ids: set[int],
    pg: EmbeddedPostgres,
    oracle: Oracle | None,
    phase_oracle: PhaseOracle | None,
    plugin: dict | None = None,
    sensitivity: Sensitivity = Sensitivity(),
    door: str = NATIVE,
    count_mode: str = "full",
) -> dict:
    """One arm on a fresh emulator (and, for the optimizer, a fresh database); clients call ``door``."""
    config = emulator_config(scenario, sensitivity, count_mode)
    if arm in SERVER_CONTEXT:
        config = replace(config, default_num_ctx=SERVER_CONTEXT[arm])
    async with AsyncExitStack() as stack:
        emulator, clock = await stack.enter_async_context(virtual_emulator(config))
        url, policy, settle = await enter_arm(stack, arm, pg, emulator.url, plugin, oracle, phase_oracle)
        if isinstance(policy, Optimizer):
            # Outcomes finish in simulated time, which may run for days: it starts a week back so that no
            # finish time lies in the future (the tuner rejects those more than a day ahead).
            epoch = time.time() - WEEK_S
            policy.core.wall_clock = lambda: epoch + clock.t
        results = await drive(
            requests, concurrency, url, emulator, clock, policy.options_for, policy.completed, settle, door
        )
        f = figures(results, emulator, long_ids)
        if not isinstance(policy, Optimizer):
            return f
        decisions = policy.core.decisions
        f["decision_reasons"] = dict(Counter(reason for reason, *_rest in decisions))
        f["loads_gateway"] = policy.core.loads_judged
        f["loads_tuner"] = sum(m.reloads for m in policy.tuner.policy.models.values())
        f["prepare_ms_p50"] = round(1000 * quantile([d[3] for d in decisions], 0.5), 3)
        # Truncations of requests the tuner decided, apart from those a service failure (timeout, open
        # breaker, sticky options) sent on without a decision: on a loaded host the request path fails open.
        f["truncated_decided"] = sum(
            1
            for r, (reason, *_rest) in zip(results, decisions)
            if r.record is not None and r.record.truncated and reason in DECIDED
        )
        f["_decisions"], f["_results"] = decisions, results
        return f


async def choose_oracles(
    scenario: Scenario,
    requests: list[WorkloadRequest],
    long_ids: set[int],
    pg: EmbeddedPostgres,
    sensitivity: Sensitivity,
) -> tuple[Oracle, PhaseOracle]:
    """Hindsight: per-model contexts that hold every request (of the run, of each phase); the num_batch with
    the lowest mean latency for the whole-run oracle, used by both."""
    output = default_output_tokens(SEED)
    contexts = oracle_contexts(requests, output)
    best: tuple[float, Oracle] | None = None
    for batch in ORACLE_BATCHES:
        candidate = Oracle(contexts, batch)
        f = await run_arm(
            scenario,
            "oracle",
            requests,
            1,
            long_ids,
            pg,
            candidate,
            PhaseOracle.choose(requests, output, batch),
            sensitivity=sensitivity,
        )
        if f["truncated"] == 0 and (best is None or f["mean_s"] < best[0]):
            best = (f["mean_s"], candidate)
    assert best is not None, "no oracle configuration avoids truncation"
    return best[1], PhaseOracle.choose(requests, output, best[1].num_batch)


async def run_scenarios(
    pg: EmbeddedPostgres,
    scenarios: list[Scenario],
    n: int | None,
    levels: tuple[int, ...],
    plugin: dict | None = None,
    arms: tuple[str, ...] = ARMS,
    sensitivity: Sensitivity = Sensitivity(),
    kind: str = "templates",
    door: str = NATIVE,
    count_mode: str = "full",
) -> dict:
    """Every scenario x concurrency x arm on ``pg``; ``plugin`` overrides the gateway's PluginConfig fields;
    clients call ``door`` (the compatible door: Ollama's defaults vs the gateway, which translates)."""
    results: dict[str, dict[int, dict[str, dict]]] = {}
    for scenario in scenarios:
        requests, long_ids = workload(scenario, n, kind)
        flags = settled([Result(r, None, 0) for r in requests])
        oracle, phase_oracle = (
            await choose_oracles(scenario, requests, long_ids, pg, sensitivity)
            if {"oracle", "phase-oracle"} & set(arms)
            else (None, None)
        )
        results[scenario.name] = {}
        for conc in levels:
            by_arm = {
                arm: await run_arm(
                    scenario,
                    arm,
                    requests,
                    conc,
                    long_ids,
                    pg,
                    oracle,
                    phase_oracle,
                    plugin,
                    sensitivity,
                    door,
                    count_mode,
                )
                for arm in arms
            }
            compare(by_arm, flags)
            if oracle is not None and "oracle" in by_arm:
                by_arm["oracle"]["config"] = {"num_ctx": oracle.num_ctx, "num_batch": oracle.num_batch}
            if phase_oracle is not None and "phase-oracle" in by_arm:
                by_arm["phase-oracle"]["config"] = {
                    "num_ctx": phase_oracle.num_ctx,
                    "num_batch": phase_oracle.num_batch,
                }
            results[scenario.name][conc] = by_arm
    return results


async def run(
    quick: bool,
    only: str | None = None,
    requests_n: int | None = None,
    concurrencies: tuple[int, ...] | None = None,
    arms: tuple[str, ...] = ARMS,
    sensitivity: Sensitivity = Sensitivity(),
    kind: str = "templates",
    door: str = NATIVE,
    plugin: dict | None = None,
    count_mode: str = "full",
) -> dict:
    """The benchmark on its own embedded Postgres; a full run of the templates at the cited constants writes
    bench/results/ (anything else only prints)."""
    n = requests_n or (None if kind == "chat" else 250 if quick else 1000)
    levels = concurrencies or ((1, 4) if quick else (1, 2, 4, 8))
    scenarios = [s for s in SCENARIOS if only in (None, s.name)]
    with tempfile.TemporaryDirectory(prefix="e2e-pg-") as tmp:
        pg = await asyncio.to_thread(EmbeddedPostgres, Path(tmp) / "pg")
        try:
            results = await run_scenarios(
                pg,
                scenarios,
                n,
                levels,
                plugin,
                arms=arms,
                sensitivity=sensitivity,
                kind=kind,
                door=door,
                count_mode=count_mode,
            )
        finally:
            await asyncio.to_thread(pg.stop)
    if (
        not quick
        and arms == ARMS
        and sensitivity == Sensitivity()
        and kind == "templates"
        and door == NATIVE
        and count_mode == "full"
    ):
        write_outputs(results, scenarios, RESULTS, n or 0)
    return results


async def run_sensitivity(quick: bool, requests_n: int | None, kind: str) -> dict:
    """gpu-24gb with each rate varied on its own: the optimizer's p50 and mean against the defaults'."""
    out: dict = {}
    for label, setting in SENSITIVITY_GRID.items():
        results = await run(quick, "gpu-24gb", requests_n, (1,), ("passthrough", "optimizer"), setting, kind)
        arms = results["gpu-24gb"][1]
        base, opt = arms["passthrough"], arms["optimizer"]
        out[label] = {
            "p50_vs_defaults": round(opt["p50_s"] / base["p50_s"] - 1.0, 4),
            "mean_vs_defaults": round(opt["mean_s"] / base["mean_s"] - 1.0, 4),
            "truncated": {"passthrough": base["truncated"], "optimizer": opt["truncated"]},
            "loads": {"passthrough": base["loads"], "optimizer": opt["loads"]},
        }
        print(f"{label}: {json.dumps(out[label])}", file=sys.stderr)
    ratios = [v["p50_vs_defaults"] for v in out.values()]
    return {"gpu-24gb": out, "p50_vs_defaults_range": [min(ratios), max(ratios)]}


def summary(results: dict) -> dict:
    """The last-line JSON: per scenario and arm the KEYS at the lowest concurrency, and per concurrency."""
    out: dict = {}
    for scenario, by_conc in results.items():
        first = min(by_conc)
        out[scenario] = {}
        for arm, f in by_conc[first].items():
            entry = {k: f[k] for k in KEYS} | {k: f[k] for k in COMPARED if k in f}
            entry["by_concurrency"] = {
                str(c): {k: by_conc[c][arm][k] for k in (*KEYS, *DIAGNOSIS) if k in by_conc[c][arm]}
                for c in sorted(by_conc)
            }
            out[scenario][arm] = entry
    return out


def write_outputs(results: dict, scenarios: list[Scenario], out_dir: Path, n: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {
        s: {
            c: {a: {k: v for k, v in f.items() if not k.startswith("_")} for a, f in by_arm.items()}
            for c, by_arm in by_conc.items()
        }
        for s, by_conc in results.items()
    }
    (out_dir / "e2e.json").write_text(json.dumps(clean, indent=1) + "\n")
    lines = [
        f"Requests per run: {n}. Latencies: simulated seconds "
        "(+ the measured request-path overhead of the plugin core for the optimizer).",
        "",
        TABLE_HEADER,
    ]
    for scenario, by_conc in results.items():
        for conc, by_arm in sorted(by_conc.items()):
            lines += [table_row(scenario, conc, arm, f) for arm, f in by_arm.items()]
    lines += ["", *[f"- **{s.name}**: {s.represents}" for s in scenarios]]
    (out_dir / "e2e.md").write_text("\n".join(lines) + "\n")
    plot(json.loads(json.dumps(clean)), out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, concurrency 1 and 4; writes no files")
    parser.add_argument("--scenario", choices=[s.name for s in SCENARIOS], help="one scenario (default: all)")
    parser.add_argument("--requests", type=int, help="requests per run (default 250 quick, 1000 full)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="concurrency levels (default 1 4 quick)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run (default: all)")
    parser.add_argument("--workload", choices=WORKLOADS, default="templates", help="which traffic (default templates)")
    parser.add_argument(
        "--compat",
        action="store_true",
        help="the compatible-API arm: the workload through /v1/chat/completions, defaults vs optimizer",
    )
    parser.add_argument("--load-rate", type=float, default=1.0, help="multiplier on the emulator's load rate")
    parser.add_argument("--prompt-rate", type=float, default=1.0, help="multiplier on its prompt speed")
    parser.add_argument(
        "--count-mode",
        choices=sorted(COUNT_MODES),
        default="full",
        help="how the emulated Ollama reports prompt_eval_count (the version it mirrors)",
    )
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="gpu-24gb, concurrency 1, defaults vs optimizer at every setting of SENSITIVITY_GRID",
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        help="the plugin's request-path budget and call timeout (default: the shipped values); on a "
        "loaded host a missed deadline re-sends the last options (sticky), which can truncate",
    )
    parser.add_argument(
        "--no-leases",
        action="store_true",
        help="the plugin without tuner leases (every request waits for Recommend), for comparison",
    )
    args = parser.parse_args()
    started = time.monotonic()
    plugin: dict = {"budget_ms": args.budget_ms, "call_timeout_ms": args.budget_ms} if args.budget_ms else {}
    if args.no_leases:
        plugin["leases"] = False
    if args.sensitivity:
        line = asyncio.run(run_sensitivity(args.quick, args.requests, args.workload))
    else:
        arms = COMPAT_ARMS if args.compat else tuple(a for a in ARMS if a in args.arms)
        results = asyncio.run(
            run(
                args.quick,
                args.scenario,
                args.requests,
                tuple(args.concurrency) if args.concurrency else None,
                arms,
                Sensitivity(args.load_rate, args.prompt_rate),
                args.workload,
                COMPAT_DOOR if args.compat else NATIVE,
                plugin,
                args.count_mode,
            )
        )
        line = summary(results)
    print(f"wall {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(json.dumps(line))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
