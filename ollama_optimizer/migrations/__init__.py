"""Numbered, idempotent schema migrations (NNNN_name.sql), recorded in sys_schema_version."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Serialises concurrent migrators (two services starting at once).
_LOCK_KEY = 0x6F6C6C616D61  # "ollama"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover() -> list[Migration]:
    """All migration files, ordered by version; duplicate numbers are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"bad migration file name: {path.name}")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"duplicate migration version {version}")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def apply_migrations(dsn: str) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    conn = await asyncpg.connect(dsn)
    try:
        applied_now: list[int] = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS sys_schema_version (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM sys_schema_version")}
            for migration in discover():
                if migration.version in done:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO sys_schema_version (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied_now.append(migration.version)
                log.info("applied migration %04d_%s", migration.version, migration.name)
        return applied_now
    finally:
        await conn.close()
