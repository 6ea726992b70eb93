"""Reusable matcher fixtures (registered for every test module by conftest.py).

- ``TEST_MATCHER_SETTINGS``: the shipped defaults with a database budget a loaded CI host cannot exceed (a Match
  that runs out of it answers "not matched", which a test would read as a wrong answer).
- ``matcher_settings``: ``TEST_MATCHER_SETTINGS`` (override the fixture to change).
- ``matcher``: a real matcher (gRPC on 127.0.0.1, any port) over the per-test ``pool``; ``.address``, ``.port``.
- ``matcher_stub``: a MatcherStub on a channel to ``matcher``.
- ``prompt(seed, tokens)``: deterministic pseudo-text of about ``tokens`` tokens.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from matcher_service.main import MatcherServer, start_matcher
from matcher_service.settings import MatcherSettings
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2_grpc

TEST_MATCHER_SETTINGS = MatcherSettings(match_db_timeout=30.0)
_VOCABULARY = [f"w{i}x" for i in range(5000)]


def prompt(seed: int, tokens: int) -> str:
    """Words from a 5,000-word vocabulary (one token each), reproducible per seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_VOCABULARY) for _ in range(tokens))


@pytest.fixture
def matcher_settings() -> MatcherSettings:
    return TEST_MATCHER_SETTINGS


@pytest.fixture
async def matcher(pool: asyncpg.Pool, matcher_settings: MatcherSettings) -> AsyncIterator[MatcherServer]:
    server = await start_matcher(pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), matcher_settings)
    yield server
    await server.stop(0)


@pytest.fixture
async def matcher_stub(matcher: MatcherServer) -> AsyncIterator[matcher_pb2_grpc.MatcherStub]:
    async with create_channel(matcher.address) as channel:
        yield matcher_pb2_grpc.MatcherStub(channel)
