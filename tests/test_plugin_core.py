"""The host-agnostic core against stand-in services: apply, fail open, breaker, bounded telemetry."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import pytest

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from proxy_plugin.breaker import CircuitBreaker, State
from proxy_plugin.canonical import canonical_text, within_cap
from proxy_plugin.command import strip_command
from proxy_plugin.config import load_config
from proxy_plugin.core import OptimizerCore
from proxy_plugin.decision import FinishedRequest, RequestPlan
from proxy_plugin.outcome import build_outcome
from proxy_plugin.probes import HostProbes, MemoryFigures

from plugin_fixtures import StandInTuner, plugin_config, sample, stand_ins, wait_until

CHAT = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
DEAD = "127.0.0.1:1"  # nothing listens on port 1


def test_canonical_text() -> None:
    assert canonical_text(CHAT) == "system: Be brief.\nuser: Hi\n"
    assert canonical_text({"model": "m", "system": "S. ", "prompt": "P"}) == "S. P"
    assert canonical_text({"model": "m", "prompt": None}) == ""
    assert within_cap("é" * 10, 20) and not within_cap("é" * 11, 20)


def test_strip_command() -> None:
    assert strip_command({"prompt": "/opt  hello"}) == {"prompt": "hello"}
    assert strip_command({"prompt": "/optimal hello"}) is None
    stripped = strip_command(
        {"messages": [{"role": "user", "content": "/opt hi"}, {"role": "assistant", "content": "x"}]}
    )
    assert stripped is None  # like the host: only when the last message is the user's
    assert strip_command({"messages": [{"role": "user", "content": "/opt hi"}]}) == {
        "messages": [{"role": "user", "content": "hi"}]
    }


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=5, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is State.OPEN and not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and breaker.state is State.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state is State.OPEN
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.allow()


def test_config_file_and_env(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"budget_ms": 20, "always_on": False}))
    cfg = load_config(path, env={"OPT_BUDGET_MS": "30", "TUNER_ADDRESS": "tuner:1", "OPT_PROBES": "off"})
    assert (cfg.budget_ms, cfg.always_on, cfg.tuner_address, cfg.probes) == (30.0, False, "tuner:1", False)
    path.write_text(json.dumps({"budget": 1}))
    with pytest.raises(ValueError):
        load_config(path, env={})
    assert load_config(env={}).matcher_address == "127.0.0.1:50061"  # the shipped config.json


def test_a_retired_config_key_is_ignored_with_a_warning(tmp_path, caplog) -> None:
    """source_id named a gateway by what it wrote; a config that still has it loads, and says so."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"source_id": "gw-1", "budget_ms": 20}))
    with caplog.at_level(logging.WARNING, logger="proxy_plugin.config"):
        assert load_config(path, env={}).budget_ms == 20
    assert any("'source_id' is no longer read" in r.getMessage() for r in caplog.records)


async def test_apply_respects_client_options() -> None:
    async with stand_ins() as services:
        core = OptimizerCore(services.config())
        sent, decision = await core.prepare(CHAT)
        assert decision.applied and sent["options"] == {"num_ctx": 8192, "num_batch": 256}
        assert "options" not in CHAT  # the caller's dict is never mutated

        mine = {**CHAT, "options": {"num_ctx": 4096, "temperature": 0}}
        sent, mine_decision = await core.prepare(mine)
        assert sent["options"] == {"num_ctx": 4096, "temperature": 0, "num_batch": 256}
        assert (mine_decision.num_ctx, mine_decision.num_batch) == (4096, 256)

        both = {**CHAT, "options": {"num_ctx": 4096, "num_batch": 128}}
        matches = services.matcher.matches
        sent, decision = await core.prepare(both)
        assert sent is both and decision.reason == "client_options" and services.matcher.matches == matches

        core.observe(sent, {"done": True}, decision)  # not matched: Report only, no Observe
        core.observe(mine, {"done": True, "prompt_eval_count": 10, "eval_count": 5}, mine_decision)
        await core.flush()
        assert [o.counts_known for o in services.tuner.outcomes] == [False, True]
        assert services.tuner.outcomes[-1].eval_count == 5 and services.tuner.outcomes[-1].num_ctx == 4096
        assert len(services.matcher.observed) == 1 and services.matcher.observed[0].template_id == 1
        await core.close()


async def test_passthrough_reasons() -> None:
    async with stand_ins() as services:
        core = OptimizerCore(services.config(max_text_bytes=64, min_confidence=0.95))
        for request, reason in (
            ({"messages": []}, "no_model"),
            ({"model": "m", "prompt": ""}, "empty_text"),
            ({"model": "m", "prompt": "p", "options": [1]}, "bad_options"),
            ({"model": "m", "prompt": "x" * 65}, "text_too_large"),
            ({"model": "m", "prompt": "short"}, "low_confidence"),
        ):
            before = sample("optimizer_plugin_passthrough_total", reason=reason)
            sent, decision = await core.prepare(request)
            assert sent is request and decision.reason == reason
            assert sample("optimizer_plugin_passthrough_total", reason=reason) == before + 1
        await core.close()


async def test_services_down_fail_open_and_breaker_opens() -> None:
    core = OptimizerCore(plugin_config(DEAD, DEAD, breaker_threshold=3, breaker_cooldown_s=3600))
    reasons = []
    for _ in range(5):
        sent, decision = await core.prepare(CHAT)
        assert sent is CHAT and not decision.applied
        reasons.append(decision.reason)
    assert set(reasons[:3]) <= {"rpc_error", "timeout"}
    assert reasons[3:] == ["breaker_open", "breaker_open"]
    assert core.breaker_states()["matcher"] == "open"
    assert sample("optimizer_plugin_breaker_state", service="matcher") == 1
    core.observe(CHAT, {}, decision)  # telemetry with services down: dropped and counted, never raised
    await core.flush()
    await core.close()


async def test_slow_matcher_is_cut_by_the_deadline_then_the_breaker() -> None:
    async with stand_ins(hang_matcher=True) as services:
        core = OptimizerCore(
            services.config(budget_ms=30, call_timeout_ms=20, breaker_threshold=2, breaker_cooldown_s=3600)
        )
        reasons = [(await core.prepare(CHAT))[1].reason for _ in range(4)]
        assert reasons == ["timeout", "timeout", "breaker_open", "breaker_open"]
        assert services.matcher.matches == 2  # the open breaker makes no calls
        await core.close(flush_timeout_s=0.1)


async def test_outcomes_the_tuner_dropped_are_counted_as_dropped_not_sent() -> None:
    async with stand_ins() as services:
        services.tuner.buffer_max = 2
        core = OptimizerCore(services.config())
        _sent, decision = await core.prepare(CHAT)
        sent = sample("optimizer_plugin_telemetry_sent_total", kind="report")
        full = sample("optimizer_plugin_telemetry_dropped_total", reason="tuner_full")
        for _ in range(5):
            core.observe(CHAT, {"done": True}, decision)
        await core.flush()
        assert sample("optimizer_plugin_telemetry_sent_total", kind="report") == sent + 2
        assert sample("optimizer_plugin_telemetry_dropped_total", reason="tuner_full") == full + 3
        await core.close()


async def test_queue_overflow_drops_and_counts_without_blocking() -> None:
    async with stand_ins() as services:
        services.tuner.report_gate = asyncio.Event()
        core = OptimizerCore(services.config(queue_size=2, batch_size=1))
        _sent, decision = await core.prepare(CHAT)
        dropped = sample("optimizer_plugin_telemetry_dropped_total", reason="queue_full")
        core.observe(CHAT, {"done": True}, decision)
        await asyncio.wait_for(services.tuner.report_entered.wait(), 90)  # the worker is now stuck in Report
        for _ in range(10):
            core.observe(CHAT, {"done": True}, decision)  # returns at once: nothing here awaits
        assert sample("optimizer_plugin_telemetry_dropped_total", reason="queue_full") == dropped + 8
        services.tuner.report_gate.set()
        await core.flush()
        await wait_until(lambda: len(services.tuner.outcomes) == 3)
        assert len({o.outcome_id for o in services.tuner.outcomes}) == 3
        await core.close()


def test_outcome_without_counts_and_probes() -> None:
    decision = RequestPlan(model="m", endpoint="chat", started=0.0, template_id=3, decision_id="d")
    aggregated = {"message": {"content": "hello"}, "done": True}
    outcome = build_outcome(FinishedRequest(decision, aggregated, 1.5, 0.0, 1.0), MemoryFigures())
    assert not outcome.counts_known and outcome.eval_count == 0 and outcome.action == tuner_pb2.PASSTHROUGH
    full = {"done": True, "prompt_eval_count": 7, "eval_count": 2, "load_duration": -5, "done_reason": "odd"}
    outcome = build_outcome(FinishedRequest(replace(decision), full, 1.0, 0.5, 1.0), MemoryFigures(10, 0, 0))
    assert outcome.counts_known and outcome.prompt_eval_count == 7 and outcome.load_duration_ns == 0
    assert outcome.done_reason == "" and outcome.host_rss_bytes == 10
    figures = HostProbes(True).read()  # no GPU (or no pynvml) here: zeros, never an error
    assert figures.host_rss_bytes > 0 and figures.gpu_memory_used_bytes >= 0
    assert HostProbes(False).read() == MemoryFigures()


async def test_service_failure_resends_the_options_last_applied_to_the_model() -> None:
    async with stand_ins() as services:
        core = OptimizerCore(services.config(breaker_threshold=1, breaker_cooldown_s=3600))
        request = {"model": "m:1", "messages": [{"role": "user", "content": "hello there"}]}
        applied, first = await core.prepare(request)
        assert first.applied and applied["options"] == {"num_ctx": 8192, "num_batch": 256}
        await services.stop()
        other = {"model": "never-applied:1", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):  # failure, then an open breaker: the same options, no reload in Ollama
            sent, decision = await core.prepare(dict(request))
            assert sent["options"] == {"num_ctx": 8192, "num_batch": 256}
            assert decision.applied and decision.reason == "sticky"
        # The repeated text came from the Match memo, so only the tuner's breaker opened; the first new text
        # finds the matcher dead, the next one its breaker open: both untouched.
        for reason in ("rpc_error", "breaker_open"):
            untouched, decision = await core.prepare(other)
            assert untouched is other and not decision.applied and decision.reason == reason
        await core.close(0.1)


async def test_sticky_options_can_be_disabled() -> None:
    async with stand_ins() as services:
        core = OptimizerCore(services.config(sticky_ttl_s=0))
        request = {"model": "m:1", "messages": [{"role": "user", "content": "hello there"}]}
        assert (await core.prepare(request))[1].applied
        await services.stop()
        sent, decision = await core.prepare(request)
        assert sent is request and not decision.applied
        await core.close(0.1)


class _FirstReportTimesOut(StandInTuner):
    """A tuner whose first Report never answers (it is cancelled at the client's deadline), as a tuner does
    that is slow to take a fresh connection's first call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    async def Report(self, request, context):
        self.calls.append([o.outcome_id for o in request.outcomes])
        if len(self.calls) == 1:
            await asyncio.Event().wait()
        return await super().Report(request, context)


async def test_a_report_that_timed_out_is_sent_again_with_the_same_outcomes() -> None:
    async with stand_ins(tuner=_FirstReportTimesOut()) as services:
        # the first Report never answers whatever its deadline: a long one lets the second answer on a loaded host
        core = OptimizerCore(services.config(offpath_timeout_ms=2000))
        _sent, decision = await core.prepare(CHAT)
        sent = sample("optimizer_plugin_telemetry_sent_total", kind="report")
        timed_out = sample("optimizer_plugin_telemetry_dropped_total", reason="timeout")
        core.observe(CHAT, {"done": True, "prompt_eval_count": 7}, decision)
        await core.flush()
        first, again = services.tuner.calls
        assert first == again and len(first) == 1  # the tuner counts an outcome it already has as a duplicate
        assert [o.outcome_id for o in services.tuner.outcomes] == first
        assert sample("optimizer_plugin_telemetry_sent_total", kind="report") == sent + 1
        assert sample("optimizer_plugin_telemetry_dropped_total", reason="timeout") == timed_out
        await core.close()
