"""The servers' learning budget, against the real matcher and Postgres: Observes stalled on a row lock
never take the RPC slots nor the database connections Match needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
import pytest

from matcher_service.main import start_matcher
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

from matcher_fixtures import prompt

MODEL = "llama3.2:3b"


async def test_stalled_observes_are_shed_over_the_learning_budget_and_match_is_served(
    pool, dsn, matcher_settings
) -> None:
    """Three slots, learning budget two: two Observes stall on a row lock, the third is shed, Match answers."""
    server = await start_matcher(
        pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0, max_concurrent_rpcs=3), matcher_settings
    )
    try:
        async with observes_stalled(server.address, dsn, 2, 2) as (stub, observe, text, template_id):
            with pytest.raises(grpc.aio.AioRpcError) as shed:
                await stub.Observe(observe, timeout=10)
            assert shed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            match = await stub.Match(matcher_pb2.MatchRequest(model=MODEL, text=text), timeout=10)
            assert match.matched and match.template_id == template_id
    finally:
        await server.stop(0)


async def test_stalled_observes_leave_match_database_connections(matcher, pool, dsn) -> None:
    """Observes waiting on a row lock hold at most half the pool: Match still reaches the database."""
    size = pool.get_max_size()
    async with observes_stalled(matcher.address, dsn, size, size // 2) as (stub, _observe, text, template_id):
        match = await stub.Match(matcher_pb2.MatchRequest(model=MODEL, text=text + " more"), timeout=10)
        assert match.matched and match.template_id == template_id


@asynccontextmanager
async def observes_stalled(
    address: str, dsn: str, count: int, waiting: int
) -> AsyncIterator[tuple[matcher_pb2_grpc.MatcherStub, matcher_pb2.ObserveRequest, str, int]]:
    """``count`` Observes of a learned template, held by its row lock until at least ``waiting`` wait in
    Postgres; yields the stub, the Observe request, the text and the template id; the Observes then fold."""
    probe, blocker = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        async with create_channel(address) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            text, observe, created = await _learned(stub)
            async with blocker.transaction():
                await blocker.execute("SELECT id FROM matcher_template FOR UPDATE")
                held = [asyncio.ensure_future(stub.Observe(observe, timeout=30)) for _ in range(count)]
                await wait_until_async(lambda: _lock_waiters(probe), waiting)
                yield stub, observe, text, created.template_id
            folded = await asyncio.gather(*held)
            assert all(f.template_id == created.template_id for f in folded)
    finally:
        await blocker.close()
        await probe.close()


async def _learned(
    stub: matcher_pb2_grpc.MatcherStub,
) -> tuple[str, matcher_pb2.ObserveRequest, matcher_pb2.ObserveResponse]:
    """A text, the Observe request of its fingerprints, and the template that Observe created."""
    text = prompt(7, 400)
    first = await stub.Match(matcher_pb2.MatchRequest(model=MODEL, text=text), timeout=10)
    observe = matcher_pb2.ObserveRequest(model=MODEL, fingerprints=first.fingerprints)
    return text, observe, await stub.Observe(observe, timeout=10)


async def _lock_waiters(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))


async def wait_until_async(probe, expected: int, timeout_s: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    """Poll an async probe until it returns at least ``expected`` (bounded)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while await probe() < expected:
        if loop.time() > end:
            raise AssertionError(f"probe never reached {expected}")
        await asyncio.sleep(0.01)
