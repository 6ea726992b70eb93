"""Shared fixtures: one embedded Postgres per test session, a fresh migrated database per test, each
fingerprint kernel in turn."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings

# CI runs the property suites with a fixed seed so a run is reproducible; locally they explore anew.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from ollama_optimizer.embedded_pg import EmbeddedPostgres  # noqa: E402 - after the profile, before any test module
from ollama_optimizer.migrations import apply_migrations  # noqa: E402
from prompt_fingerprint import kernel  # noqa: E402

pytest_plugins = ["matcher_fixtures", "pki_fixtures", "tuner_fixtures"]  # their fixtures, for every test module

TEMPLATE_DB = "optimizer_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A real Postgres for the whole session, with a migrated template database."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")

    async def prepare() -> None:
        conn = await asyncpg.connect(server.uri())
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        await conn.close()
        await apply_migrations(server.uri(TEMPLATE_DB))

    asyncio.run(prepare())
    yield server
    server.stop()


@pytest.fixture
async def dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """DSN of a fresh database cloned from the migrated template (dropped afterwards)."""
    name = f"t{next(_counter)}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server.uri())
    await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    try:
        yield pg_server.uri(name)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(params=[kernel.NUMPY, kernel.COMPILED])
def fingerprint_kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each fingerprint kernel in turn, chosen as a service chooses it (``warm_up``); numpy again after."""
    assert kernel.warm_up(request.param) == request.param
    yield request.param
    kernel.use_numpy()
