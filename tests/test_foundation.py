"""Foundation: generated code is fresh, migrations are idempotent, health/shutdown/bind behave."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ollama_optimizer import protogen
from ollama_optimizer.config import DatabaseConfig, ServerConfig
from ollama_optimizer.embedded_pg import default_shared_buffers_mb
from ollama_optimizer.health_check import EXIT_CONNECTION_FAILURE, EXIT_SERVING, EXIT_UNHEALTHY, check
from ollama_optimizer.migrations import apply_migrations, discover
from ollama_optimizer.server import BindError, start_server
from ollama_optimizer.settings_env import load


def test_generated_code_is_not_stale(tmp_path: Path, project_root: Path) -> None:
    protogen.generate(tmp_path)
    fresh = tmp_path / "ollama_optimizer" / "gen" / "optimizer" / "v1"
    committed = project_root / "ollama_optimizer" / "gen" / "optimizer" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names, "protoc generated nothing"
    _match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code, run `make protos`: {mismatch + errors}"


async def test_migrations_apply_twice_without_change(dsn: str) -> None:
    # The fixture's database is already migrated: a second run applies nothing.
    assert (await apply_migrations(dsn)).applied == []
    conn = await asyncpg.connect(dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM sys_schema_version ORDER BY 1")]
    finally:
        await conn.close()
    assert versions == [m.version for m in discover()]


async def test_migrations_on_empty_database(pg_server) -> None:
    admin = await asyncpg.connect(pg_server.uri())
    await admin.execute("CREATE DATABASE migrate_twice")
    try:
        first = await apply_migrations(pg_server.uri("migrate_twice"))
        second = await apply_migrations(pg_server.uri("migrate_twice"))
        assert first.applied == [m.version for m in discover()]  # contract steps too: a new database
        assert second.applied == [] and second.contract_pending == []
    finally:
        await admin.execute("DROP DATABASE migrate_twice WITH (FORCE)")
        await admin.close()


def _cfg() -> ServerConfig:
    return ServerConfig(listen="127.0.0.1:0", metrics_port=0)


async def test_health_serving_then_not_serving_on_shutdown() -> None:
    running = await start_server(_cfg(), [], ("test.Svc",), serve_metrics=False)
    address = f"127.0.0.1:{running.port}"
    assert (await check(address))[0] == EXIT_SERVING
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="test.Svc"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert (await check(address))[0] == EXIT_UNHEALTHY
    await running.stop(grace=0.5)
    assert (await check(address, timeout=0.3))[0] == EXIT_CONNECTION_FAILURE


async def test_failed_bind_is_an_error() -> None:
    running = await start_server(_cfg(), [], ("test.Svc",), serve_metrics=False)
    try:
        with pytest.raises(BindError):
            await start_server(
                ServerConfig(listen=f"127.0.0.1:{running.port}", metrics_port=0),
                [],
                ("test.Svc",),
                serve_metrics=False,
            )
    finally:
        await running.stop(grace=0)


def test_health_cli_exit_code_on_bad_address() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ollama_optimizer.cli", "health", "not-an-address"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "invalid address" in proc.stderr


async def test_embedded_postgres_caches_the_block_indexes(pool: asyncpg.Pool) -> None:
    """The session's embedded server was restarted with shared_buffers sized for the matcher's indexes."""
    mb = await pool.fetchval("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'")
    assert mb == default_shared_buffers_mb() >= 128
    configured = load(DatabaseConfig, {"OPTIMIZER_EMBEDDED_SHARED_BUFFERS_MB": "300"}).embedded_shared_buffers_mb
    assert default_shared_buffers_mb(configured) == 300
