"""A Report answered while Postgres is up means its outcomes are stored: a kill -9 afterwards loses nothing."""

from __future__ import annotations

import dataclasses

import asyncpg

from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from tuner_service.main import start_tuner

from tuner_fixtures import fast_settings, local_server, make_outcome


async def test_report_answers_after_its_outcomes_are_stored(pool: asyncpg.Pool) -> None:
    # A flush interval of an hour: only the Report's own synchronous flush can store the rows.
    settings = dataclasses.replace(fast_settings(), flush_interval_seconds=3600, report_sync_seconds=30)
    tuner = await start_tuner(pool, local_server(), settings)
    try:
        async with create_channel(tuner.address) as channel:
            stub = tuner_pb2_grpc.TunerStub(channel)
            for n in (3, 5):
                reply = await stub.Report(tuner_pb2.ReportRequest(outcomes=[make_outcome() for _ in range(n)]))
                assert reply.accepted == n
            assert await pool.fetchval("SELECT count(*) FROM tuner_outcome") == 8
    finally:
        await tuner.stop(0)
