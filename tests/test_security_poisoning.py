"""Poisoning resistance: unauthenticated, unknown or flooding sources cannot move a template."""
from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY
from tuner_fixtures import fast_settings, make_outcome

from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from tuner_service.guard import SOURCE_METADATA_KEY, GuardSettings, ReportGuard, source_of
from tuner_service.main import RunningTuner, start_tuner

MODEL = "llama3.1:8b"
TOKEN = "poison-test-token"


async def _start(pool: asyncpg.Pool, guard: GuardSettings, token: str = "") -> RunningTuner:
    cfg = ServerConfig(listen="127.0.0.1:0", metrics_port=0, auth_token=token)
    return await start_tuner(pool, cfg, fast_settings(), guard=guard)


@pytest.fixture
async def guarded(pool: asyncpg.Pool) -> AsyncIterator[RunningTuner]:
    running = await _start(pool, GuardSettings(frozenset({"gw-1", "gw-2"}), rate_per_second=1e-6, burst=5), TOKEN)
    yield running
    await running.stop(0)


async def _state(running: RunningTuner, pool: asyncpg.Pool) -> tuple[int, int]:
    """(observations in memory for template 7, outcome rows stored) after a flush."""
    await running.core.writer.flush()
    model = running.core.policy.models.get(MODEL)
    template = model.templates.get(7) if model else None
    return (template.observations if template else 0), await pool.fetchval("SELECT count(*) FROM tuner_outcome")


def _report(n: int) -> tuner_pb2.ReportRequest:
    return tuner_pb2.ReportRequest(outcomes=[make_outcome(template_id=7) for _ in range(n)])


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("optimizer_tuner_reports_refused_total", {"reason": reason}) or 0.0


async def test_unauthenticated_and_unknown_sources_cannot_move_a_template(guarded, pool) -> None:
    for token, source, code in (("", "gw-1", grpc.StatusCode.UNAUTHENTICATED),
                                ("wrong", "gw-1", grpc.StatusCode.UNAUTHENTICATED),
                                (TOKEN, "intruder", grpc.StatusCode.PERMISSION_DENIED),
                                (TOKEN, None, grpc.StatusCode.PERMISSION_DENIED)):
        async with create_channel(guarded.address, token=token) as channel:
            metadata = ((SOURCE_METADATA_KEY, source),) if source else None
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await tuner_pb2_grpc.TunerStub(channel).Report(_report(3), metadata=metadata, timeout=5)
            assert err.value.code() == code, (token, source)
    assert await _state(guarded, pool) == (0, 0)
    async with create_channel(guarded.address, token=TOKEN) as channel:
        reply = await tuner_pb2_grpc.TunerStub(channel).Report(
            _report(3), metadata=((SOURCE_METADATA_KEY, "gw-1"),), timeout=5)
    assert reply.accepted == 3
    assert await _state(guarded, pool) == (3, 3)


async def test_report_rate_limit_is_per_source_and_counted(guarded, pool) -> None:
    before = _refused("rate_limited")
    async with create_channel(guarded.address, token=TOKEN) as channel:
        stub = tuner_pb2_grpc.TunerStub(channel)
        gw1, gw2 = ((SOURCE_METADATA_KEY, "gw-1"),), ((SOURCE_METADATA_KEY, "gw-2"),)
        assert (await stub.Report(_report(5), metadata=gw1, timeout=5)).accepted == 5
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Report(_report(1), metadata=gw1, timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.Report(_report(2), metadata=gw2, timeout=5)).accepted == 2  # its own bucket
    assert _refused("rate_limited") == before + 1
    assert await _state(guarded, pool) == (7, 7)


def test_token_bucket_refills_and_keys_by_peer_host() -> None:
    now = [0.0]
    guard = ReportGuard(GuardSettings(frozenset(), rate_per_second=10.0, burst=10), clock=lambda: now[0])
    guard.check("a", 10)
    with pytest.raises(Exception):
        guard.check("a", 1)
    now[0] = 0.5  # 5 tokens back
    guard.check("a", 5)
    assert source_of(None, "ipv4:10.0.0.7:51234") == "peer:10.0.0.7"
    assert source_of(None, "ipv6:[::1]:51234") == "peer:[::1]"
    assert source_of([(SOURCE_METADATA_KEY, "gw-9")], "ipv4:10.0.0.7:1") == "gw-9"
