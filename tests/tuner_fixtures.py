"""Reusable tuner fixtures (registered by conftest.py) and builders: `from tuner_fixtures import make_outcome`."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from tuner_service.main import RunningTuner, start_tuner
from tuner_service.settings import PolicySettings, TunerSettings

_ids = itertools.count(1)


def fast_settings(**policy: Any) -> TunerSettings:
    """Settings for tests: quick flushes and lock retries, policy overrides by keyword."""
    return TunerSettings(
        policy=dataclasses.replace(PolicySettings(), **policy), flush_interval_seconds=0.05, lock_retry_seconds=0.05
    )


def local_server() -> ServerConfig:
    return ServerConfig(listen="127.0.0.1:0", metrics_port=0)


def make_outcome(
    model: str = "llama3.1:8b",
    template_id: int = 1,
    prompt_units: int = 1000,
    prompt_eval_count: int = 1100,
    eval_count: int = 200,
    **fields: Any,
) -> tuner_pb2.Outcome:
    """A plausible, valid outcome; any field can be overridden."""
    values: dict[str, Any] = dict(
        outcome_id=f"o-{next(_ids)}",
        model=model,
        template_id=template_id,
        prompt_units=prompt_units,
        message_count=2,
        action=tuner_pb2.PASSTHROUGH,
        prompt_eval_count=prompt_eval_count,
        eval_count=eval_count,
        total_duration_ns=2_000_000_000,
        load_duration_ns=5_000_000,
        prompt_eval_duration_ns=400_000_000,
        eval_duration_ns=1_500_000_000,
        done_reason="stop",
        counts_known=True,
        latency_seconds=2.01,
        ttft_seconds=0.5,
    )
    values.update(fields)
    return tuner_pb2.Outcome(**values)


@pytest.fixture
async def tuner(pool: asyncpg.Pool) -> AsyncIterator[RunningTuner]:
    """An in-process tuner on the test's fresh database."""
    running = await start_tuner(pool, local_server(), fast_settings())
    yield running
    await running.stop(0)


@pytest.fixture
async def tuner_stub(tuner: RunningTuner) -> AsyncIterator[tuner_pb2_grpc.TunerStub]:
    channel = create_channel(tuner.address)
    yield tuner_pb2_grpc.TunerStub(channel)
    await channel.close()
