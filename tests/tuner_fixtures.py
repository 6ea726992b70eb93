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
from tuner_service.policy import APPLY, RUNNER_KEPT, RUNNER_LOADED, Advice, Demand, Observation
from tuner_service.settings import PolicySettings, TunerSettings

_ids = itertools.count(1)


def fast_settings(**policy: Any) -> TunerSettings:
    """Settings for tests: quick flushes and lock retries, policy overrides by keyword."""
    return TunerSettings(
        policy=dataclasses.replace(PolicySettings(), **policy), flush_interval_seconds=0.05, lock_retry_seconds=0.05
    )


def local_server() -> ServerConfig:
    return ServerConfig(listen="127.0.0.1:0", metrics_port=0)


def served(demand: Demand, advice: Advice, prompt_eval_count: int, eval_count: int, **fields: Any) -> Observation:
    """The outcome of ``demand`` sent as ``advice`` says (with Ollama's defaults when it passes through): by
    default 2 s without a load, stopped by itself, counts known; other fields by name."""
    applied = advice.action == APPLY
    timing: dict[str, Any] = dict(total_s=2.0, load_s=0.01, prompt_eval_s=0.4, eval_s=1.5, done_reason="stop")
    return Observation(
        demand.model,
        demand.template_id,
        demand.prompt_units,
        demand.message_count,
        applied,
        advice.num_ctx if applied else 0,
        advice.num_batch if applied else 0,
        demand.num_predict,
        prompt_eval_count,
        eval_count,
        counts_known=True,
        **(timing | fields),
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


def ran(
    model: str,
    template_id: int,
    units: int,
    decision: Advice,
    counts: tuple[int, int],
    seconds: tuple[float, float, float],
    ctx: int,
    size: tuple[int, int],
    finished_at: float,
    loaded: bool,
) -> Observation:
    """What a stand-in Ollama reports for one two-message request run as ``decision`` said: (prompt, output)
    tokens, (load, prompt, decode) seconds, the context it ran at, /api/ps (size, size_vram), whether a runner
    was loaded for it."""
    applied = decision.action == APPLY
    load_s, prompt_s, eval_s = seconds
    return Observation(
        model,
        template_id,
        units,
        2,
        applied,
        decision.num_ctx if applied else 0,
        decision.num_batch if applied else 0,
        0,
        *counts,
        load_s + prompt_s + eval_s,
        load_s,
        prompt_s,
        eval_s,
        "stop",
        True,
        loaded_context_length=ctx,
        model_size=size[0],
        model_vram=size[1],
        finished_at=finished_at,
        runner_load=RUNNER_LOADED if loaded else RUNNER_KEPT,
    )
