"""Single writer across processes sharing a database; Postgres down and back; the admin CLI."""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from ollama_optimizer.channels import create_channel
from ollama_optimizer.cli_support import CliError
from ollama_optimizer.db import create_pool
from ollama_optimizer.embedded_pg import EmbeddedPostgres
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.migrations import apply_migrations
from tuner_service import admin_cli, store
from tuner_service.main import start_tuner

from tuner_fixtures import fast_settings, local_server, make_outcome

MODEL = "llama3.1:8b"
WAIT_S = 90  # bounded waits, generous for a loaded CI machine


async def test_second_tuner_is_a_read_only_standby_until_the_writer_stops(dsn: str) -> None:
    pool_a = await create_pool(dsn, 1, 4)
    pool_b = await create_pool(dsn, 1, 4)
    first = await start_tuner(pool_a, local_server(), fast_settings())
    second = await start_tuner(pool_b, local_server(), fast_settings())
    channel = create_channel(second.address)
    try:
        assert first.core.writer.is_writer and second.core.read_only
        stub = tuner_pb2_grpc.TunerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Pin(tuner_pb2.PinRequest(model=MODEL, template_id=1, num_ctx=8192))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        first.core.report([make_outcome(template_id=1) for _ in range(3)])
        standby = await stub.Report(tuner_pb2.ReportRequest(outcomes=[make_outcome(template_id=1)]))
        assert standby.accepted == 1
        assert (await stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, prompt_units=100))).decision_id
        await first.stop(0)
        await asyncio.wait_for(second.core.writer.wait_writer(), WAIT_S)
        await asyncio.wait_for(second.core.writer.wait_drained(), WAIT_S)
        assert second.core.policy.models[MODEL].templates[1].observations == 4
        assert await pool_b.fetchval("SELECT count(*) FROM tuner_outcome") == 4
        assert await pool_b.fetchval("SELECT sample_count FROM tuner_rule WHERE param = 'num_ctx'") == 4
    finally:
        await channel.close()
        await second.stop(0)
        await first.stop(0)
        await pool_a.close()
        await pool_b.close()


async def test_postgres_down_keeps_recommending_and_flushes_without_duplicates(tmp_path) -> None:
    data = tmp_path / "pg"
    server = await asyncio.to_thread(EmbeddedPostgres, data)
    await apply_migrations(server.uri())
    pool = await asyncpg.create_pool(server.uri(), min_size=1, max_size=4)
    tuner = await start_tuner(pool, local_server(), fast_settings())
    try:
        tuner.core.report([make_outcome(template_id=2, prompt_units=2000, prompt_eval_count=2100) for _ in range(4)])
        await asyncio.wait_for(tuner.core.writer.wait_drained(), WAIT_S)
        await asyncio.to_thread(server.stop)

        stub_channel = create_channel(tuner.address)
        stub = tuner_pb2_grpc.TunerStub(stub_channel)
        decision = await stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=2, prompt_units=2000))
        assert decision.action == tuner_pb2.APPLY
        late = [make_outcome(template_id=2, prompt_units=2000, prompt_eval_count=2100) for _ in range(5)]
        response = await stub.Report(tuner_pb2.ReportRequest(outcomes=late + late[:2]))
        assert (response.accepted, response.duplicates, response.stored, response.buffered) == (5, 2, 0, 5)

        # Postgres is back: the next Report takes the writer lock again and is acknowledged only once
        # everything buffered meanwhile is stored (a crash right after it loses nothing).
        server = await asyncio.to_thread(EmbeddedPostgres, data)
        after = await stub.Report(tuner_pb2.ReportRequest(outcomes=[make_outcome(template_id=2)]))
        assert (after.accepted, after.stored) == (1, 1) and tuner.core.writer.is_writer
        conn = await asyncpg.connect(server.uri())
        try:
            assert await conn.fetchval("SELECT count(*) FROM tuner_outcome") == 10
            assert await conn.fetchval("SELECT count(DISTINCT outcome_id) FROM tuner_outcome") == 10
        finally:
            await conn.close()
        await stub_channel.close()
    finally:
        await tuner.stop(0)
        await pool.close()
        await asyncio.to_thread(server.stop)


async def test_write_behind_survives_an_unexpected_error(pool: asyncpg.Pool, monkeypatch) -> None:
    """Any exception in a flush (e.g. asyncpg's InternalClientError on a connection broken by a crash)
    is logged and retried: the loop must not die, or nothing buffered would ever be written."""
    real_write = store.write_outcomes
    failures = []

    async def failing_once(conn, rows):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(len(rows))
            raise RuntimeError("unexpected client state")
        await real_write(conn, rows)

    monkeypatch.setattr(store, "write_outcomes", failing_once)
    errors = REGISTRY.get_sample_value("optimizer_tuner_db_errors_total", {"op": "loop"}) or 0.0
    tuner = await start_tuner(pool, local_server(), fast_settings())
    try:
        tuner.core.report([make_outcome(template_id=7) for _ in range(3)])
        await asyncio.wait_for(tuner.core.writer.wait_drained(), WAIT_S)
        assert failures == [3]
        assert await pool.fetchval("SELECT count(*) FROM tuner_outcome WHERE template_id = 7") == 3
        assert REGISTRY.get_sample_value("optimizer_tuner_db_errors_total", {"op": "loop"}) == errors + 1
    finally:
        await tuner.stop(0)


async def test_outcome_buffer_is_bounded_and_drops_are_counted(pool: asyncpg.Pool) -> None:
    settings = fast_settings()
    settings = type(settings)(policy=settings.policy, buffer_max=3, flush_interval_seconds=60, lock_retry_seconds=60)
    tuner = await start_tuner(pool, local_server(), settings)
    try:
        result = tuner.core.report([make_outcome() for _ in range(5)])
        assert (len(result.kept), result.dropped) == (3, [3, 4]) and len(tuner.core.writer.rows) == 3
    finally:
        await tuner.stop(0)


async def test_admin_cli_prints_tables(tuner, tuner_stub, capsys) -> None:
    await tuner_stub.Report(tuner_pb2.ReportRequest(outcomes=[make_outcome(template_id=4) for _ in range(4)]))
    base = dict(address=tuner.address, model=MODEL, template_id=4, json=False)
    assert await admin_cli.explain(argparse.Namespace(**base)) == 0
    assert "observations" in capsys.readouterr().out
    assert await admin_cli.pin(argparse.Namespace(**base, num_ctx=8192, num_batch=0)) == 0
    assert "pinned" in capsys.readouterr().out
    assert await admin_cli.stats(argparse.Namespace(address=tuner.address, period=600, model="", json=False)) == 0
    assert "requests" in capsys.readouterr().out
    assert await admin_cli.reset(argparse.Namespace(**base)) == 0
    assert "forgotten" in capsys.readouterr().out
    with pytest.raises(CliError, match=r"cannot reach the tuner at 127\.0\.0\.1:1"):
        await admin_cli.explain(argparse.Namespace(**{**base, "address": "127.0.0.1:1"}))
