"""Durability of acknowledged outcomes: serialised flushes, a fenced single writer, honest Report accounting."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from ollama_optimizer.channels import create_channel
from ollama_optimizer.db import create_pool
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from tuner_service import store
from tuner_service.core import TunerCore
from tuner_service.main import start_tuner

from tuner_fixtures import fast_settings, local_server, make_outcome

MODEL = "llama3.1:8b"
WAIT_S = 90  # bounded waits, generous for a loaded CI machine
# The background loop never flushes on its own: only the flushes a test starts (or a Report's) run.
QUIET = dataclasses.replace(fast_settings(), flush_interval_seconds=3600, lock_retry_seconds=3600)


class Gate:
    """Stands in for store.write_outcomes: every call waits inside its transaction until opened."""

    def __init__(self, real: Callable[..., Awaitable[None]]) -> None:
        self.real, self.entered, self.opened = real, asyncio.Event(), asyncio.Event()

    async def __call__(self, conn: asyncpg.Connection, rows: list[Any]) -> None:
        self.entered.set()
        await self.opened.wait()
        await self.real(conn, rows)


async def _overlap(core: TunerCore, gate: Gate, first: list[Any], during: list[Any], last: list[Any]) -> Any:
    """Report ``first``; a loop flush enters its transaction; report ``during``; a Summary call enters
    its own flush (it runs on until it first waits); report ``last``; open the gate; Summary's rows."""
    core.report(first)
    loop_flush = asyncio.create_task(core.writer.flush())
    await gate.entered.wait()
    core.report(during)
    entered, flush = asyncio.Event(), core.writer.flush

    async def flush_entering() -> None:
        entered.set()
        await flush()

    core.writer.flush = flush_entering  # type: ignore[method-assign]
    summary_call = asyncio.create_task(core.summary(3600, ""))
    await entered.wait()
    core.report(last)
    gate.opened.set()
    await loop_flush
    return await summary_call


async def _stored_ids(pool: asyncpg.Pool) -> set[str]:
    return {r["outcome_id"] for r in await pool.fetch("SELECT outcome_id FROM tuner_outcome")}


@pytest.fixture
async def gated(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TunerCore, Gate]]:
    """A writer core whose outcome writes wait at a gate."""
    gate = Gate(store.write_outcomes)
    monkeypatch.setattr(store, "write_outcomes", gate)
    core = TunerCore(pool, QUIET)
    await core.start()
    yield core, gate
    await core.stop()


async def test_a_summary_flush_overlapping_the_loop_flush_loses_no_row(gated, pool: asyncpg.Pool) -> None:
    """Loop flush of rows 1-10 in flight, rows 11-20 arrive, Summary flushes, rows 21-30 arrive: all 30 stored."""
    core, gate = gated
    batches = [[make_outcome() for _ in range(10)] for _ in range(3)]
    await _overlap(core, gate, *batches)
    while core.writer.rows:  # what is still buffered is written by later flushes, never dropped
        await core.writer.flush()
    assert await _stored_ids(pool) == {o.outcome_id for batch in batches for o in batch}


async def test_two_flushes_of_the_same_rows_neither_raise_nor_stall(gated, pool: asyncpg.Pool) -> None:
    """Loop flush and Summary flush overlapping on the same ten rows: Summary answers, every row stored once."""
    core, gate = gated
    rows = [make_outcome() for _ in range(10)]
    totals = [r for r in await _overlap(core, gate, rows, [], []) if r["model"] is None]
    assert totals and totals[0]["requests"] == 10
    assert not core.writer.rows
    assert await _stored_ids(pool) == {o.outcome_id for o in rows}


async def _terminate_lock_session(dsn: str) -> int:
    """Terminate the session holding the advisory lock; count the sessions that have ended (and so released
    the lock: pg_terminate_backend only signals unless it is given a time to wait for the end)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, $1)) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted",
                WAIT_S * 1000,
            )
        )
    finally:
        await conn.close()


def _requests_counted(model: str) -> float:
    return REGISTRY.get_sample_value("optimizer_tuner_requests_total", {"model": model, "action": "passthrough"}) or 0


@contextlib.asynccontextmanager
async def _two_tuners(dsn: str) -> AsyncIterator[tuple[TunerCore, TunerCore]]:
    """Two tuner cores on their own pools (not started)."""
    pool_a, pool_b = await create_pool(dsn, 1, 4), await create_pool(dsn, 1, 4)
    a, b = TunerCore(pool_a, QUIET), TunerCore(pool_b, QUIET)
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()
        await pool_a.close()
        await pool_b.close()


async def _lose_the_lock_with(a: TunerCore, b: TunerCore, dsn: str, outcomes: list[tuner_pb2.Outcome]) -> None:
    """A (the writer) loses its lock session to B, folds ``outcomes`` and fails to store them; B stops."""
    assert await _terminate_lock_session(dsn) == 1
    await b.start()
    a.report(outcomes)
    with contextlib.suppress(Exception):
        await a.writer.flush()
    assert not a.writer.is_writer
    await b.stop()


async def test_a_writer_whose_lock_session_died_is_fenced_and_reloads_when_it_regains_the_lock(dsn: str) -> None:
    async with _two_tuners(dsn) as (a, b):
        await a.start()
        a.report([make_outcome(template_id=5) for _ in range(3)])
        await a.writer.flush()
        assert await _terminate_lock_session(dsn) == 1
        await b.start()
        assert b.writer.is_writer  # the lock went with the session
        await b.residency.ensure(MODEL, 5)  # as a Report does: learn on top of what is stored
        b.report([make_outcome(template_id=5) for _ in range(4)])
        await b.writer.flush()

        late = [make_outcome(template_id=5) for _ in range(2)]
        a.report(late)  # A has not noticed yet: it folds, but its write cannot commit
        with contextlib.suppress(Exception):
            await a.writer.flush()
        assert not await _stored_ids(b.pool) & {o.outcome_id for o in late}  # fenced
        assert not a.writer.is_writer
        assert (
            await b.pool.fetchval("SELECT sample_count FROM tuner_rule WHERE template_id = 5 AND param = 'num_ctx'")
            == 7
        )
        a.report([make_outcome(template_id=5)])  # a demoted writer queues without folding
        assert a.policy.models[MODEL].templates[5].observations == 5

        await b.stop()
        result = a.report([make_outcome(template_id=5)])
        await a.writer.wait_stored(result.all_stored, WAIT_S)  # takes the lock back: reload, fold, write
        assert a.writer.is_writer and result.all_stored()
        assert a.policy.models[MODEL].templates[5].observations == 7 + 2 + 1 + 1
        assert len(await _stored_ids(a.pool)) == 11
        assert (
            await a.pool.fetchval("SELECT sample_count FROM tuner_rule WHERE template_id = 5 AND param = 'num_ctx'")
            == 11
        )


async def test_outcomes_folded_again_after_a_lost_lock_are_counted_once(dsn: str) -> None:
    """A writer folds outcomes, loses its lock before storing them and folds them again once it has the lock
    back: the benefit metrics count each stored outcome once."""
    model = "count-once:1b"
    before = _requests_counted(model)
    async with _two_tuners(dsn) as (a, b):
        await a.start()
        a.report([make_outcome(model=model) for _ in range(3)])
        await a.writer.flush()
        assert _requests_counted(model) == before + 3
        await _lose_the_lock_with(a, b, dsn, [make_outcome(model=model) for _ in range(2)])
        assert _requests_counted(model) == before + 3  # folded, not stored: not counted
        result = a.report([make_outcome(model=model)])
        await a.writer.wait_stored(result.all_stored, WAIT_S)  # lock back: the two are folded again, stored
        stored = await a.pool.fetchval("SELECT count(*) FROM tuner_outcome WHERE model = $1", model)
        assert stored == 6
        assert _requests_counted(model) == before + stored


async def test_outcomes_folded_again_are_not_compared_with_themselves(dsn: str) -> None:
    """Two reloads folded, not stored, when the writer loses its lock (8192 after a stored 8192, then 4096):
    folded again after the reload, the first one is compared with what is stored before it, not with the
    second one: one reload is the optimizer's, not two."""
    model = "blame-once:1b"

    def load(num_ctx: int) -> tuner_pb2.Outcome:
        return make_outcome(
            model=model, action=tuner_pb2.APPLY, num_ctx=num_ctx, num_batch=512, runner_load=tuner_pb2.RUNNER_LOADED
        )

    async with _two_tuners(dsn) as (a, b):
        await a.start()
        a.report([load(8192)])
        await a.writer.flush()
        await _lose_the_lock_with(a, b, dsn, [load(8192), load(4096)])
        result = a.report([make_outcome(model=model)])
        await a.writer.wait_stored(result.all_stored, WAIT_S)
        causes = await a.pool.fetch(
            "SELECT load_cause, count(*) AS n FROM tuner_outcome WHERE model = $1 AND load_cause > 0 GROUP BY 1", model
        )
        assert {r["load_cause"]: r["n"] for r in causes} == {1: 1, 3: 2}  # optimizer: 4096; other: the 8192s


async def test_a_hung_writer_loses_the_lock_to_a_standby(dsn: str) -> None:
    """A writer that stops talking to Postgres (here: its loop stopped, its lock session left open and
    idle, as a SIGSTOPped or wedged process leaves it) has its session ended by Postgres after the lock
    session timeout; the standby takes the lock and stores, and the hung writer's late flush is fenced."""
    settings = dataclasses.replace(fast_settings(), lock_session_timeout_seconds=1.0)
    pool_a, pool_b = await create_pool(dsn, 1, 4), await create_pool(dsn, 1, 4)
    a, b = TunerCore(pool_a, settings), TunerCore(pool_b, settings)
    try:
        await a.start()
        assert a.writer.is_writer
        hung = a.writer._task
        assert hung is not None
        hung.cancel()  # no more heartbeats; the lock session stays open
        with contextlib.suppress(asyncio.CancelledError):
            await hung
        await b.start()
        assert not b.writer.is_writer
        await asyncio.wait_for(b.writer.wait_writer(), WAIT_S)
        result = b.report([make_outcome(), make_outcome()])
        await b.writer.wait_stored(result.all_stored, WAIT_S)
        assert result.all_stored()

        late = [make_outcome()]
        a.report(late)
        with pytest.raises((store.FenceLost, asyncpg.InterfaceError, asyncpg.PostgresError)):
            await a.writer.flush()
        assert not a.writer.is_writer
        assert await _stored_ids(pool_b) == {item.outcome.outcome_id for item in result.kept.values()}
    finally:
        await b.stop()
        await a.stop()
        await pool_a.close()
        await pool_b.close()


async def test_report_counts_stored_buffered_and_dropped_apart(pool: asyncpg.Pool) -> None:
    settings = dataclasses.replace(QUIET, buffer_max=3, report_sync_seconds=0)
    tuner = await start_tuner(pool, local_server(), settings)
    try:
        async with create_channel(tuner.address) as channel:
            stub = tuner_pb2_grpc.TunerStub(channel)
            outcomes = [make_outcome() for _ in range(5)]
            reply = await stub.Report(tuner_pb2.ReportRequest(outcomes=[*outcomes, outcomes[0]]))
            assert (reply.accepted, reply.stored, reply.buffered, reply.dropped, reply.duplicates) == (3, 0, 3, 2, 1)
            assert (list(reply.buffered_index), list(reply.dropped_index), list(reply.duplicate_index)) == (
                [0, 1, 2],
                [3, 4],
                [5],
            )
            await tuner.core.writer.flush()
            again = await stub.Report(tuner_pb2.ReportRequest(outcomes=outcomes[3:]))  # dropped ids may come again
            assert (again.accepted, again.duplicates) == (2, 0)
    finally:
        await tuner.stop(0)


async def test_report_says_stored_only_for_committed_rows(pool: asyncpg.Pool) -> None:
    writer = await start_tuner(pool, local_server(), dataclasses.replace(QUIET, report_sync_seconds=30))
    standby = await start_tuner(pool, local_server(), dataclasses.replace(QUIET, report_sync_seconds=30))
    try:
        for tuner, expected in ((writer, (2, 2, 0)), (standby, (2, 0, 2))):
            async with create_channel(tuner.address) as channel:
                reply = await tuner_pb2_grpc.TunerStub(channel).Report(
                    tuner_pb2.ReportRequest(outcomes=[make_outcome(), make_outcome()])
                )
            assert (reply.accepted, reply.stored, reply.buffered) == expected
        assert await pool.fetchval("SELECT count(*) FROM tuner_outcome") == 2
    finally:
        await standby.stop(0)
        await writer.stop(0)
