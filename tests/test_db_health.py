"""grpc.health.v1 follows the database: the matcher stops serving, the tuner serves from memory, and
the server overall ("") never says SERVING while the database is gone. Real Postgres stopped and started."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from matcher_service.main import start_matcher
from matcher_service.service import SERVICE_NAME as MATCHER
from ollama_optimizer import db_health
from ollama_optimizer.embedded_pg import EmbeddedPostgres
from ollama_optimizer.migrations import apply_migrations
from ollama_optimizer.server import LIVENESS
from tuner_service.main import SERVICE_NAME as TUNER
from tuner_service.main import start_tuner

from tuner_fixtures import fast_settings, local_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WATCH_BOUND_SECONDS = 90.0  # a failure bound for a busy host, never a timing assertion


async def _statuses(address: str, names: tuple[str, ...]) -> dict[str, int]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            name: (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)).status for name in names
        }


async def _reach(address: str, expected: dict[str, int]) -> None:
    """Wait on a health Watch stream per name until each shows its expected status."""

    async def one(stub: health_pb2_grpc.HealthStub, name: str, status: int) -> None:
        call = stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=WATCH_BOUND_SECONDS)
        seen: list[int] = []
        try:
            async for response in call:
                seen.append(response.status)
                if response.status == status:
                    return
        except grpc.aio.AioRpcError as exc:
            raise AssertionError(f"{address} {name!r} never became {status} (saw {seen}): {exc.code()}") from exc
        finally:
            call.cancel()
        raise AssertionError(f"{address} {name!r}: the Watch stream ended before {status} (saw {seen})")

    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await asyncio.gather(*(one(stub, name, status) for name, status in expected.items()))


async def test_health_follows_the_database(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_health, "PROBE_SECONDS", 0.05)
    server = await asyncio.to_thread(EmbeddedPostgres, tmp_path / "pg")
    await apply_migrations(server.uri())
    pool = await asyncpg.create_pool(server.uri(), min_size=1, max_size=4)
    matcher = await start_matcher(pool, local_server())
    tuner = await start_tuner(pool, local_server(), fast_settings())
    try:
        up = {"": SERVING, db_health.DATABASE: SERVING, LIVENESS: SERVING}
        await _reach(matcher.address, {**up, MATCHER: SERVING})
        await _reach(tuner.address, {**up, TUNER: SERVING})

        await asyncio.to_thread(server.stop)
        down = {"": NOT_SERVING, db_health.DATABASE: NOT_SERVING}
        await _reach(matcher.address, {**down, MATCHER: NOT_SERVING})
        await _reach(tuner.address, down)
        # What stays: the process answers, and the tuner serves Recommend from memory.
        assert await _statuses(matcher.address, (LIVENESS,)) == {LIVENESS: SERVING}
        assert await _statuses(tuner.address, (TUNER, LIVENESS)) == {TUNER: SERVING, LIVENESS: SERVING}

        server = await asyncio.to_thread(EmbeddedPostgres, tmp_path / "pg")
        await _reach(matcher.address, {"": SERVING, MATCHER: SERVING})
        await _reach(tuner.address, {"": SERVING})
    finally:
        await matcher.stop(0)
        await tuner.stop(0)
        await pool.close()
        await asyncio.to_thread(server.stop)
