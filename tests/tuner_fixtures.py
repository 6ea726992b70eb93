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
from tuner_service.policy import Observation
from tuner_service.settings import PolicySettings, TunerSettings

_ids = itertools.count(1)


def fast_settings(**policy: Any) -> TunerSettings:
    """Settings for tests: quick flushes and lock retries, policy overrides by keyword."""
    return TunerSettings(
        policy=dataclasses.replace(PolicySettings(), **policy), flush_interval_seconds=0.05, lock_retry_seconds=0.05
    )


def local_server() -> ServerConfig:
    return ServerConfig(listen="127.0.0.1:0", metrics_port=0)


def make_observation(
    model: str, template_id: int, prompt_units: int, prompt_eval_count: int, eval_count: int, **fields: Any
) -> Observation:
    """A validated outcome as the policy folds it: by default an applied request of two messages that stopped
    by itself in 2 s (no load), counts known; any field can be given by name."""
    values: dict[str, Any] = dict(
        message_count=2,
        applied=True,
        num_ctx=0,
        num_batch=0,
        num_predict=0,
        total_s=2.0,
        load_s=0.01,
        prompt_eval_s=0.4,
        eval_s=1.5,
        done_reason="stop",
        counts_known=True,
    )
    return Observation(
        model=model,
        template_id=template_id,
        prompt_units=prompt_units,
        prompt_eval_count=prompt_eval_count,
        eval_count=eval_count,
        **(values | fields),
    )


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
