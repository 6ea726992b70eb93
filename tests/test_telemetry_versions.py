"""Telemetry that differs between Ollama versions: a low prompt_eval_count caused by the KV cache is never a
truncation, never shrinks the calibration and never grows the context (emulator --count-mode, real gateway,
matcher and tuner on Postgres)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import ollama
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.ollama_sim.counts import prompt_counts
from bench.workload import words
from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from tuner_service.evidence import TOTALS, UNCACHED, UNKNOWN, count_semantics, read_counts
from tuner_service.main import start_tuner
from tuner_service.policy import APPLY, Demand, Observation, Policy
from tuner_service.settings import PolicySettings
from tuner_service.state import ladder, rung_for

from plugin_fixtures import gateway_chain, plugin_config
from tuner_fixtures import fast_settings, local_server, make_outcome

MODEL = "llama3.2:3b"
_rng = random.Random(15)
SYSTEM = words(_rng, 300)
INSTRUCTIONS = words(_rng, 1500)


def templated(seed: int) -> list[dict[str, str]]:
    """A template with a long fixed head (cached by Ollama after the first request) and a short new tail."""
    return [
        {"role": "system", "content": SYSTEM + "\n\n" + INSTRUCTIONS},
        {"role": "user", "content": words(random.Random(seed), 40)},
    ]


@pytest.mark.parametrize(
    ("version", "cached_known", "expected"),
    [
        ("0.30.0", False, UNCACHED),
        ("0.30.7", False, UNCACHED),
        ("0.1.30", False, UNCACHED),
        ("0.32.15", False, TOTALS),
        ("0.31.0", False, TOTALS),
        ("0.30.0", True, TOTALS),
        ("", False, UNKNOWN),
        ("not a version", False, UNKNOWN),
    ],
)
def test_count_semantics_by_version(version: str, cached_known: bool, expected: str) -> None:
    assert count_semantics(version, cached_known) == expected


def test_counts_that_may_leave_out_the_cache_are_lower_bounds() -> None:
    assert read_counts("0.30.0", False, 40, 0, cold_cache=False).whole is False
    assert read_counts("0.30.0", False, 2000, 0, cold_cache=True).whole  # a fresh load has an empty cache
    assert not read_counts("0.1.30", False, 0, 0, cold_cache=False).prompt_tokens  # omitted: fully cached
    split = read_counts("0.33.3", True, 40, 1900, cold_cache=False)  # disagreeing fields: the larger reading
    assert (split.prompt_tokens, split.whole) == (1940, False) and "cached" in split.note


@pytest.mark.parametrize("mode", ["full", "uncached", "omit-cached", "split"])
def test_emulator_count_modes(mode: str) -> None:
    counts = prompt_counts(mode, 2000, 1900)
    expected = {
        "full": {"prompt_eval_count": 2000},
        "uncached": {"prompt_eval_count": 100},
        "omit-cached": {"prompt_eval_count": 100},
        "split": {"prompt_eval_count": 2000, "prompt_eval_cached_count": 1900},
    }[mode]
    assert counts == expected
    assert ("prompt_eval_count" in prompt_counts(mode, 2000, 2000)) is (mode != "omit-cached")


async def _explain(address: str, template_id: int = 0) -> tuner_pb2.ExplainResponse:
    async with create_channel(address) as channel:
        return await tuner_pb2_grpc.TunerStub(channel).Explain(
            tuner_pb2.ExplainRequest(model=MODEL, template_id=template_id), timeout=5
        )


async def _run_template(matcher_address: str, tuner_address: str, mode: str, host: str = "") -> tuple[list, list[int]]:
    """14 requests of the cached-head template through a gateway; the emulator's records and the contexts sent."""
    cfg = plugin_config(matcher_address, tuner_address, ollama_host=host)
    async with gateway_chain(cfg, count_mode=mode) as (gw, _tap, emu):
        client = ollama.AsyncClient(host=gw.url)
        for i in range(14):
            await client.chat(model=MODEL, messages=templated(i))
            await gw.gateway.flush()
        records = list(emu.requests)
    return records, [r.runner["num_ctx"] for r in records if r.options.get("num_ctx")]


def _rung_index(value: int) -> int:
    return ladder(1024, 262144, 131072, 4).index(value)


@pytest.mark.parametrize("mode", ["full", "uncached", "omit-cached", "split"])
async def test_cached_head_ends_within_one_rung_of_the_true_need(matcher, tuner, mode: str) -> None:
    """The runaway reproduction: one template repeated with a cached head, on an upstream of each counting
    behaviour. Every context the model is loaded with is within one rung of the true need (the largest
    prompt + output Ollama saw), nothing is truncated, and explain says how the counts were read."""
    records, loaded = await _run_template(matcher.address, tuner.address, mode)
    true_need = max(r.prompt_tokens_sent + r.eval_count for r in records)
    trail = [(r.runner.get("num_ctx"), r.loaded, r.cached_tokens) for r in records]  # context, cold load, cached
    assert sum(r.cached_tokens > 0 for r in records) >= 10, trail  # the head was cached: counts were low
    assert not any(r.truncated for r in records)
    rungs = ladder(1024, 262144, 131072, 4)
    assert loaded and _rung_index(max(loaded)) <= rungs.index(rung_for(true_need, rungs)) + 1, (loaded, true_need)
    state = await _explain(tuner.address)
    assert state.model_context_limit == 131072  # /api/show, via the gateway
    if mode in ("uncached", "omit-cached"):
        assert state.count_semantics == UNCACHED
        assert "uncached" in state.reason and "not read as a truncation" in state.reason


def _template_outcome(prompt_eval_count: int, num_ctx: int = 0, num_batch: int = 0, **fields: Any) -> Observation:
    """Template 1's request of 3000 units and 200 tokens out, applied when it carried a context."""
    timing = (2.0, 0.01, 0.4, 1.5)
    return Observation(
        MODEL, 1, 3000, 2, num_ctx > 0, num_ctx, num_batch, 0, prompt_eval_count, 200, *timing, "stop", True, **fields
    )


def _managed_policy() -> tuple[Policy, int]:
    """A policy managing MODEL with one confident template (id 1), and the context it believes loaded."""
    policy = Policy(PolicySettings())
    for _ in range(4):
        policy.observe(_template_outcome(3300, loaded_context_length=2048))
    decision = policy.recommend(Demand(MODEL, 1, 3000, frozenset(), 0, 2))
    assert decision.action == APPLY
    return policy, decision.num_ctx


@pytest.mark.parametrize("dropped", [True, False])
def test_truncation_where_the_options_never_arrived_is_not_escalated(dropped: bool) -> None:
    """Through an unpatched smart-proxy Ollama ran its default 2048 while the tuner believed its own context:
    the cut prompt (at half of 2048) must not raise the template or the model."""
    policy, believed = _managed_policy()
    model = policy.models[MODEL]
    for _ in range(3):
        learned = policy.observe(_template_outcome(1026, believed, model.loaded_batch, options_dropped=dropped))
        assert learned.truncated and learned.foreign
    assert model.templates[1].floor_ctx == 0 and model.templates[1].truncations == 0
    assert policy.recommend(Demand(MODEL, 1, 3000, frozenset(), 0, 2)).num_ctx == believed
    assert "not escalated" in model.evidence_note


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 4000), min_size=1, max_size=30))
def test_counts_that_may_leave_out_the_cache_never_lower_the_calibration(counts: list[int]) -> None:
    policy = Policy(PolicySettings())
    cold = Observation(
        MODEL, 1, 2000, 2, False, 0, 0, 0, 2200, 100, 3.0, 1.0, 0.4, 1.5, "stop", True, ollama_version="0.30.0"
    )
    policy.observe(cold)  # a load: the cache was empty, the count is the whole prompt
    model = policy.models[MODEL]
    for count in counts:
        before = policy.ratio_upper(model)
        learned = policy.observe(dataclasses.replace(cold, prompt_eval_count=count, load_s=0.01))
        assert policy.ratio_upper(model) >= before and not learned.truncated
    assert not model.templates[1].truncations and not model.templates[1].floor_ctx


async def test_a_hosts_count_semantics_survive_a_tuner_restart(pool) -> None:
    """A gateway reported Ollama 0.30.0 for host old-gpu; after a restart explain still says so, and outcomes
    that carry no version (an agent on that host) are read as that version: a low count is no truncation,
    also for a model the host has not served before."""
    first = await start_tuner(pool, local_server(), fast_settings())
    async with create_channel(first.address) as channel:
        await tuner_pb2_grpc.TunerStub(channel).Report(
            tuner_pb2.ReportRequest(
                outcomes=[
                    make_outcome(
                        MODEL,
                        prompt_units=2000,
                        prompt_eval_count=2100,
                        ollama_version="0.30.0",
                        ollama_host="old-gpu",
                        runner_load=tuner_pb2.RUNNER_LOADED,
                    )
                ]
            ),
            timeout=5,
        )
    await first.stop(0)
    second = await start_tuner(pool, local_server(), fast_settings())
    try:
        async with create_channel(second.address) as channel:
            stub = tuner_pb2_grpc.TunerStub(channel)
            state = await stub.Explain(tuner_pb2.ExplainRequest(model=MODEL, ollama_host="old-gpu"), timeout=5)
            assert state.count_semantics == UNCACHED and "Ollama 0.30.0" in state.reason, state.reason
            for model in (MODEL, "qwen2.5:14b"):
                await stub.Report(
                    tuner_pb2.ReportRequest(
                        outcomes=[
                            make_outcome(
                                model,
                                prompt_units=2000,
                                prompt_eval_count=40,
                                ollama_host="old-gpu",
                                runner_load=tuner_pb2.RUNNER_KEPT,
                            )
                            for _ in range(3)
                        ]
                    ),
                    timeout=5,
                )
                state = await stub.Explain(
                    tuner_pb2.ExplainRequest(model=model, template_id=1, ollama_host="old-gpu"), timeout=5
                )
                assert state.truncations_detected == 0 and "not read as a truncation" in state.reason, state.reason
    finally:
        await second.stop(0)
