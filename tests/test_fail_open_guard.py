"""When the request path fails open (missed deadline, open breaker) a prompt that visibly does not fit the
context in effect gets a larger one: one reload, never a silent truncation, and no reload back and forth
while the failure lasts (real gateway and emulator; stand-in services that then go away)."""

from __future__ import annotations

import json
import random

import ollama
import pytest

from bench.workload import words
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from prompt_fingerprint import OFF_LOOP_CHARS, TOKEN_RE, fingerprint
from proxy_plugin.context_guard import ContextGuard, TunerSaid, rung_above, unit_count
from proxy_plugin.core import OptimizerCore
from proxy_plugin.metrics import REGISTRY
from tuner_service.settings import PolicySettings
from tuner_service.state import ladder

from plugin_fixtures import gateway_chain, stand_ins

MODEL = "llama3.2:3b"


def _chat(units: int, seed: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": words(random.Random(seed), units)}]


def _sent_contexts(tap) -> list[int]:  # type: ignore[no-untyped-def]
    return [json.loads(body).get("options", {}).get("num_ctx", 0) for path, body in tap.bodies if path == "/api/chat"]


def _guarded_total() -> float:
    """optimizer_plugin_guarded_total over every failure reason."""
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "optimizer_plugin_guarded"
        for s in metric.samples
        if s.name.endswith("_total")
    )


async def test_a_long_document_during_an_outage_gets_a_context_that_holds_it() -> None:
    async with stand_ins(tuner=None) as services:
        services.tuner.num_ctx = 2048
        cfg = services.config(breaker_threshold=1, breaker_cooldown_s=3600, learning_breaker_cooldown_s=3600)
        async with gateway_chain(cfg) as (gw, tap, emu):
            client = ollama.AsyncClient(host=gw.url)
            await client.chat(model=MODEL, messages=_chat(100, 1))  # the tuner's 2048 is loaded
            await services.stop()
            before = _guarded_total()
            for seed in (2, 3):  # a failed Match, then an open breaker: both long, both held
                await client.chat(model=MODEL, messages=_chat(6000, seed))
            await client.chat(model=MODEL, messages=_chat(100, 4))  # short again: no reload back
            sent = _sent_contexts(tap)
            assert sent[0] == 2048 and sent[1] > 2048 and sent[1:] == [sent[1]] * 3, sent
            assert not any(r.truncated for r in emu.requests), [r.prompt_tokens_sent for r in emu.requests]
            assert emu.reloads[MODEL] == 1  # the guard's one reload
            assert _guarded_total() - before == 1


def test_the_guard_sizes_with_what_the_tuner_said() -> None:
    guard = ContextGuard(tokens_per_unit=1.5, output_tokens=256)
    text = words(random.Random(5), 3000)
    assert guard.raise_to(MODEL, text, 0, 1, 0, 4096, 131072) == rung_above((3000 * 1.5 + 16 + 256) * 1.15)
    guard.remember(MODEL, TunerSaid(1.0, 0, 0))  # the tuner measured one token per unit: it fits
    assert guard.raise_to(MODEL, text, 0, 1, 0, 4096, 131072) == 0
    guard.remember(MODEL, TunerSaid(2.0, 5120, 0))  # the operator capped the model at 5120: never above it
    assert guard.raise_to(MODEL, text, 0, 1, 0, 4096, 131072) == 5120
    assert guard.raise_to(MODEL, text, 0, 1, 0, 8192, 131072) == 0  # nothing larger allowed
    assert guard.raise_to(MODEL, "short", 0, 1, 0, 0, 0) == 0  # unknown context: Ollama's default holds it
    assert guard.raise_to(MODEL, text, 0, 1, 0, 0, 0) == 5120  # nothing known loaded: Ollama's default 4096
    guard.remember(MODEL, TunerSaid(2.0, 0, 32768))  # the tuner believes the model runs its default 32768
    assert guard.raise_to(MODEL, text, 0, 1, 0, 0, 0) == 0


def test_the_guards_rungs_are_the_tuners_default_ladder() -> None:
    s = PolicySettings()
    rungs = ladder(s.ladder_min, s.ladder_max, 0, s.ladder_steps)
    assert [rung_above(r - 1) for r in rungs[:-1]] == rungs[:-1]


@pytest.mark.parametrize("model", [MODEL, "never-seen:1b"])
async def test_recommend_tells_the_ratio_and_cap(tuner_stub, model: str) -> None:
    answer = await tuner_stub.Recommend(
        tuner_pb2.RecommendRequest(model=model, prompt_units=100, model_context_limit=8192), timeout=5
    )
    assert answer.units_to_tokens_ratio == PolicySettings().units_ratio_prior  # nothing measured yet
    assert answer.num_ctx_cap == 8192


def test_the_guard_counts_a_prompt_exactly_in_matcher_units() -> None:
    """Failing open, the guard counts a long prompt's tokens exactly (never fewer than the matcher's count,
    which reads non-ASCII punctuation inside words past its fingerprinted prefix)."""
    ascii_text = words(random.Random(7), 5000)
    assert unit_count(ascii_text, 0) == fingerprint(ascii_text).unit_count == len(TOKEN_RE.findall(ascii_text))
    other = " ".join(f"Größe—{i} мир—東京," for i in range(3000))
    assert unit_count(other, 0) == len(TOKEN_RE.findall(other)) >= fingerprint(other).unit_count
    assert unit_count("short text", 100) == len("short text")  # short: the character bound, never counted


async def test_a_prompt_too_large_to_count_on_the_loop_is_still_held() -> None:
    """A prompt above the off-loop size, failing open with nothing known loaded, is counted in a worker
    thread and sent with a context that holds it."""
    async with stand_ins() as services:
        cfg = services.config(breaker_threshold=1, breaker_cooldown_s=3600)
        core = OptimizerCore(cfg)
        await services.stop()
        await core.prepare({"model": MODEL, "messages": _chat(50, 1)})  # fails and opens the breaker
        text = words(random.Random(9), 20000)
        assert len(text) > OFF_LOOP_CHARS
        sent, plan = await core.prepare({"model": MODEL, "messages": [{"role": "user", "content": text}]})
        await core.close(flush_timeout_s=0.5)
    need = ContextGuard(cfg.guard_tokens_per_unit, cfg.guard_output_tokens).need(MODEL, unit_count(text, 0), 1, 0)
    assert plan.reason == "guarded" and sent["options"]["num_ctx"] >= need > 4096, (plan.reason, need)
