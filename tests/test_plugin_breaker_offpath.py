"""Off-path telemetry and the request-path breakers, against the real matcher and tuner on loopback.

A Report batch the tuner's guard refuses (per-source rate limit: RESOURCE_EXHAUSTED; allow-list:
PERMISSION_DENIED) or an Observe the matcher rejects as bad input says nothing about the service's
health: the breaker stays closed, Recommend is still asked, the drop is counted as ``refused``.

Learning calls (Observe, Report) have their own breakers and channels, and on the servers their own
concurrency budget: a stalled or unreachable learning path opens only the learning breakers, and never
takes the slots Match and Recommend need. Load shedding on the request path itself still opens its breaker.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
import pytest

from bench.workload import words
from matcher_service.main import start_matcher
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc, tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.server import RunningServer, start_server
from ollama_optimizer.source_tokens import SourceTokens
from proxy_plugin import rpc
from proxy_plugin.config import PluginConfig
from proxy_plugin.core import OptimizerCore
from proxy_plugin.decision import RequestPlan
from tuner_service.guard import GuardSettings
from tuner_service.main import RunningTuner, start_tuner

from plugin_fixtures import StandInMatcher, StandInTuner, plugin_config, sample, wait_until
from tuner_fixtures import fast_settings

MODEL = "llama3.2:3b"
_rng = random.Random(11)
SYSTEM = words(_rng, 120)
INSTRUCTIONS = words(_rng, 300)
# What Ollama answers (the fields the outcome carries): enough for the tuner to learn from.
STATS = {
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 900,
    "eval_count": 40,
    "total_duration": 900_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_duration": 300_000_000,
    "eval_duration": 500_000_000,
}


def request(seed: int) -> dict:
    """One template (fixed system + instructions), a different short tail per seed."""
    tail = words(random.Random(seed), 20)
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": INSTRUCTIONS + "\n\n" + tail}],
    }


@asynccontextmanager
async def guarded_tuner(pool: asyncpg.Pool, guard: GuardSettings) -> AsyncIterator[RunningTuner]:
    running = await start_tuner(
        pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), fast_settings(min_observations=1), guard=guard
    )
    try:
        yield running
    finally:
        await running.stop(0)


async def serve(core: OptimizerCore, seeds: range) -> list[RequestPlan]:
    """Requests through the core, then their outcomes, sent (or dropped) before returning.

    All requests go first, so the telemetry calls reach the breaker back to back: no successful
    Match/Recommend in between resets its count of consecutive failures.
    """
    served = [await core.prepare(request(seed)) for seed in seeds]
    for sent, decision in served:
        core.observe(sent, STATS, decision)
    await core.flush()
    return [decision for _sent, decision in served]


def core_opening_after(failures: int, matcher: str, tuner: str, **fields: Any) -> OptimizerCore:
    """A core whose breakers (request path and learning) open after ``failures`` in a row and stay open for
    the rest of the test."""
    config = plugin_config(
        matcher,
        tuner,
        breaker_threshold=failures,
        breaker_cooldown_s=3600,
        learning_breaker_cooldown_s=3600,
        **fields,
    )
    return OptimizerCore(config)


def refused() -> float:
    return sample("optimizer_plugin_telemetry_dropped_total", reason="refused")


def rpc_errors(service: str, method: str, code: str) -> float:
    return sample("optimizer_plugin_rpc_errors_total", service=service, method=method, code=code)


async def test_rate_limited_reports_never_open_the_tuner_breaker(matcher, pool) -> None:
    # Three one-outcome Reports pass the bucket (the tuner learns the template), then it is empty.
    guard = GuardSettings(frozenset(), rate_per_second=1e-6, burst=3)
    async with guarded_tuner(pool, guard) as tuner:
        core = core_opening_after(2, matcher.address, tuner.address, batch_size=1)
        refused_before = refused()
        shed_before = rpc_errors("tuner", "Report", "RESOURCE_EXHAUSTED")
        for seed in range(3):
            await serve(core, range(seed, seed + 1))
        assert rpc_errors("tuner", "Report", "RESOURCE_EXHAUSTED") == shed_before  # all three delivered
        decisions = await serve(core, range(3, 8))  # five refused batches in a row; the threshold is 2
        assert all(d.decision_id for d in decisions)  # Recommend was asked every time
        assert core.breaker_states() == {"matcher": "closed", "tuner": "closed"}
        assert sample("optimizer_plugin_breaker_state", service="tuner") == 0
        assert rpc_errors("tuner", "Report", "RESOURCE_EXHAUSTED") == shed_before + 5
        assert refused() == refused_before + 5

        _sent, decision = await core.prepare(request(99))
        assert decision.decision_id and decision.applied and decision.reason == "applied"
        await core.close()


async def test_a_gateway_is_named_by_its_own_token(pool) -> None:
    """Each gateway authenticates to matcher and tuner with its own token (no shared one), and the tuner
    takes its Reports' source from that token: gw-a is allowed to teach, gw-b is not."""
    token_a, token_b = "gateway-a-" + "1" * 22, "gateway-b-" + "2" * 22
    cfg = ServerConfig(
        listen="127.0.0.1:0", metrics_port=0, source_tokens=SourceTokens.parse(f"gw-a={token_a},gw-b={token_b}")
    )
    matcher = await start_matcher(pool, cfg)
    guard = GuardSettings(frozenset({"token:gw-a"}), rate_per_second=0, burst=0)
    tuner = await start_tuner(pool, cfg, fast_settings(min_observations=1), guard=guard)
    gateways = [
        OptimizerCore(plugin_config(matcher.address, tuner.address, auth_token=token, batch_size=1))
        for token in (token_a, token_b)
    ]
    try:
        unauthenticated = sample(
            "optimizer_plugin_rpc_errors_total", service="matcher", method="Match", code="UNAUTHENTICATED"
        )
        denied = rpc_errors("tuner", "Report", "PERMISSION_DENIED")
        assert all(d.decision_id for d in await serve(gateways[0], range(3)))
        assert all(d.decision_id for d in await serve(gateways[1], range(3, 5)))
        await tuner.core.writer.flush()
        assert await pool.fetchval("SELECT count(*) FROM tuner_outcome") == 3
        assert rpc_errors("tuner", "Report", "PERMISSION_DENIED") == denied + 2
        assert (
            sample("optimizer_plugin_rpc_errors_total", service="matcher", method="Match", code="UNAUTHENTICATED")
            == unauthenticated
        )
    finally:
        for gateway in gateways:
            await gateway.close()
        await tuner.stop(0)
        await matcher.stop(0)


async def test_reports_from_a_source_not_allowed_never_open_the_tuner_breaker(
    matcher, pool, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(rpc, "REFUSAL_WARN_INTERVAL_S", 3600.0)  # one warning for the whole test
    guard = GuardSettings(frozenset({"another-gateway"}), rate_per_second=0, burst=0)
    async with guarded_tuner(pool, guard) as tuner:
        core = core_opening_after(1, matcher.address, tuner.address, batch_size=1)
        refused_before = refused()
        denied_before = rpc_errors("tuner", "Report", "PERMISSION_DENIED")
        with caplog.at_level(logging.WARNING, logger="proxy_plugin.rpc"):
            decisions = await serve(core, range(4))  # a single failure would open a breaker with threshold 1
            assert core.breaker_states() == {"matcher": "closed", "tuner": "closed"}
            assert all(d.decision_id and d.reason == "tuner_passthrough" for d in decisions)
            decisions = await serve(core, range(4, 8))  # the breaker survived: Recommend is still asked
        assert all(d.decision_id and d.reason == "tuner_passthrough" for d in decisions)
        assert core.breaker_states() == {"matcher": "closed", "tuner": "closed"}
        assert rpc_errors("tuner", "Report", "PERMISSION_DENIED") == denied_before + 8
        assert refused() == refused_before + 8
        warnings = [r for r in caplog.records if r.name == "proxy_plugin.rpc" and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "PERMISSION_DENIED" in warnings[0].getMessage()

        _sent, decision = await core.prepare(request(99))
        assert decision.decision_id and decision.reason == "tuner_passthrough"  # asked; nothing learned
        await core.close()


async def test_observe_rejected_as_bad_input_never_opens_the_matcher_breaker(matcher, pool) -> None:
    async with guarded_tuner(pool, GuardSettings(frozenset(), rate_per_second=0, burst=0)) as tuner:
        core = core_opening_after(1, matcher.address, tuner.address)
        rejected_before = sample("optimizer_plugin_telemetry_dropped_total", reason="rejected")
        bad = matcher_pb2.Fingerprints(algorithm_version=999, unit_count=3)
        for _ in range(3):
            decision = RequestPlan(model=MODEL, endpoint="chat", started=0.0, template_id=1, fingerprints=bad)
            core.observe(request(0), STATS, decision)
            await core.flush()
        # ObserveBatch lists each bad item as rejected (counted as dropped), the call itself succeeds
        assert sample("optimizer_plugin_telemetry_dropped_total", reason="rejected") >= rejected_before + 3
        assert core.breaker_states()["matcher"] == "closed"
        [decision] = await serve(core, range(1, 2))
        assert decision.reason not in ("breaker_open", "rpc_error", "timeout") and decision.decision_id
        await core.close()


async def test_a_stopped_tuner_opens_the_learning_breaker_and_the_request_path_finds_out_itself(matcher, pool) -> None:
    async with guarded_tuner(pool, GuardSettings(frozenset(), rate_per_second=0, burst=0)) as tuner:
        core = core_opening_after(2, matcher.address, tuner.address, sticky_ttl_s=0)
        sent, decision = await core.prepare(request(0))
        assert decision.decision_id
        await tuner.stop(0)
        refused_before, dropped_before = (
            refused(),
            sample("optimizer_plugin_telemetry_dropped_total", reason="rpc_error"),
        )
        for _ in range(2):  # off the request path only: Report fails UNAVAILABLE
            core.observe(sent, STATS, decision)
            await core.flush()
        assert core.learning_breaker_states() == {"matcher": "closed", "tuner": "open"}
        assert sample("optimizer_plugin_learning_breaker_state", service="tuner") == 1
        assert core.breaker_states() == {"matcher": "closed", "tuner": "closed"}
        assert sample("optimizer_plugin_telemetry_dropped_total", reason="rpc_error") >= dropped_before + 2
        assert refused() == refused_before
        unavailable = rpc_errors("tuner", "Report", "UNAVAILABLE")
        core.observe(sent, STATS, decision)
        await core.flush()  # the learning breaker is open: dropped without a call
        assert rpc_errors("tuner", "Report", "UNAVAILABLE") == unavailable
        for seed, reason in ((1, "rpc_error"), (2, "rpc_error"), (3, "breaker_open")):  # Recommend's own failures
            _sent, decision = await core.prepare(request(seed))
            assert decision.reason == reason and not decision.decision_id
        assert core.breaker_states() == {"matcher": "closed", "tuner": "open"}
        await core.close(0.1)


async def _stand_in(
    servicer: object, add, name: str, max_concurrent_rpcs: int, learning_rpcs: int = 64
) -> RunningServer:
    cfg = ServerConfig(
        listen="127.0.0.1:0",
        metrics_port=0,
        max_concurrent_rpcs=max_concurrent_rpcs,
        max_concurrent_learning_rpcs=learning_rpcs,
    )
    return await start_server(cfg, [lambda s: add(servicer, s)], (name,), serve_metrics=False)


async def test_control_load_shedding_on_the_request_path_still_opens_the_breaker() -> None:
    """gRPC's own load shedding (maximum_concurrent_rpcs) answers Recommend RESOURCE_EXHAUSTED: that counts."""
    tuner = StandInTuner()
    servers = [
        await _stand_in(StandInMatcher(), matcher_pb2_grpc.add_MatcherServicer_to_server, "optimizer.v1.Matcher", 64),
        await _stand_in(tuner, tuner_pb2_grpc.add_TunerServicer_to_server, "optimizer.v1.Tuner", 1),
    ]
    try:
        core = core_opening_after(1, *(f"127.0.0.1:{s.port}" for s in servers), sticky_ttl_s=0)
        _sent, decision = await core.prepare({"model": "m", "prompt": "hello there"})
        assert decision.applied
        tuner.recommend_gate = asyncio.Event()
        held = asyncio.ensure_future(core.prepare({"model": "m", "prompt": "held"}))
        await asyncio.wait_for(tuner.recommend_entered.wait(), 90)  # the only slot is now held by Recommend
        shed_before = rpc_errors("tuner", "Recommend", "RESOURCE_EXHAUSTED")
        _sent, decision = await core.prepare({"model": "m", "prompt": "hello again"})
        assert decision.reason == "rpc_error"
        assert rpc_errors("tuner", "Recommend", "RESOURCE_EXHAUSTED") == shed_before + 1
        assert core.breaker_states()["tuner"] == "open"
        tuner.recommend_gate.set()
        await held
        await core.close()
    finally:
        for running in servers:
            await running.server.stop(0)


async def test_held_reports_never_take_the_request_paths_slots() -> None:
    """Over the server's learning budget a Report is shed at once; Recommend keeps its slot."""
    tuner = StandInTuner()
    tuner.report_gate = asyncio.Event()
    servers = [
        await _stand_in(StandInMatcher(), matcher_pb2_grpc.add_MatcherServicer_to_server, "optimizer.v1.Matcher", 64),
        await _stand_in(tuner, tuner_pb2_grpc.add_TunerServicer_to_server, "optimizer.v1.Tuner", 3),
    ]
    try:
        address = f"127.0.0.1:{servers[1].port}"
        core = core_opening_after(1, f"127.0.0.1:{servers[0].port}", address, sticky_ttl_s=0)
        async with create_channel(address) as channel:  # other gateways' telemetry, stalled in the tuner
            stub = tuner_pb2_grpc.TunerStub(channel)
            held = [asyncio.ensure_future(stub.Report(tuner_pb2.ReportRequest(), timeout=30)) for _ in range(2)]
            await wait_until(lambda: tuner.reports_in_flight == 2)
            with pytest.raises(grpc.aio.AioRpcError) as shed:
                await stub.Report(tuner_pb2.ReportRequest(), timeout=10)
            assert shed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "learning budget" in (shed.value.details() or "")
            _sent, decision = await core.prepare({"model": "m", "prompt": "hello there"})
            assert decision.applied and decision.decision_id
            assert core.breaker_states() == {"matcher": "closed", "tuner": "closed"}
            tuner.report_gate.set()
            await asyncio.gather(*held)
        await core.close()
    finally:
        for running in servers:
            await running.server.stop(0)


async def test_stalled_learning_never_gates_match_or_recommend(matcher, pool, dsn) -> None:
    """Observe waits on a template's row lock, Report on a locked outcome table: both time out off the
    request path (Observe opens its learning breaker), and Match still finds the template, Recommend still
    answers."""
    async with guarded_tuner(pool, GuardSettings(frozenset(), rate_per_second=0, burst=0)) as tuner:
        # the first sighting creates the template, without the short off-path deadline a loaded host can miss
        teacher = OptimizerCore(plugin_config(matcher.address, tuner.address, batch_size=1))
        await serve(teacher, range(1))
        await teacher.close()
        core = core_opening_after(
            2, matcher.address, tuner.address, batch_size=1, offpath_timeout_ms=300, match_memo_size=0
        )
        [learned] = await serve(core, range(1, 2))
        assert learned.template_id
        blocker = await asyncpg.connect(dsn)
        try:
            async with blocker.transaction():
                await blocker.execute("SELECT id FROM matcher_template FOR UPDATE")
                await blocker.execute("LOCK TABLE tuner_outcome IN EXCLUSIVE MODE")
                timeouts = rpc_errors("matcher", "ObserveBatch", "DEADLINE_EXCEEDED")
                reports_timed_out = rpc_errors("tuner", "Report", "DEADLINE_EXCEEDED")
                await serve(core, range(2, 6))
                # Observes time out (at least one; on a loaded host another may fail otherwise) and the two
                # failures in a row open the learning breaker.
                assert rpc_errors("matcher", "ObserveBatch", "DEADLINE_EXCEEDED") >= timeouts + 1
                assert core.learning_breaker_states()["matcher"] == "open"
                assert rpc_errors("tuner", "Report", "DEADLINE_EXCEEDED") >= reports_timed_out + 1
                for seed in range(6, 9):
                    _sent, decision = await core.prepare(request(seed))
                    assert decision.reason not in ("breaker_open", "rpc_error", "timeout")
                    if decision.recommending is not None:  # sent under a lease: Recommend answers off the path
                        await decision.recommending
                    assert decision.template_id == learned.template_id and decision.decision_id
                assert core.breaker_states() == {"matcher": "closed", "tuner": "closed"}
                # A Report that timed out is sent again with the same outcomes, which the tuner may by then
                # hold: its learning breaker is open or closed; the request path's never opened.
                assert core.learning_breaker_states()["matcher"] == "open"
        finally:
            await blocker.close()
        await core.close(0.1)


async def test_the_learning_breaker_probes_sooner_than_the_request_paths() -> None:
    """Reports find a new tuner writer within seconds of a failover: the learning lane's cool-down is its own
    (2 s by default), while the request path keeps its longer one (10 s)."""
    client = rpc.ServiceClient("tuner", "127.0.0.1:1", tuner_pb2_grpc.TunerStub, PluginConfig(breaker_threshold=1))
    for breaker in (client.breaker, client.learning_breaker):
        breaker.failure()
        assert breaker.rejecting()
        breaker._opened_at -= 3.0  # three seconds later
    try:
        assert not client.learning_breaker.rejecting()
        assert client.breaker.rejecting()
    finally:
        await client.close()
