"""Postgres access: a pool for a configured DSN, or an embedded server when none is given."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from .config import DatabaseConfig
from .embedded_pg import EmbeddedPostgres

log = logging.getLogger(__name__)

Reset = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass
class Database:
    """A connection pool plus the embedded server behind it, if this process owns one."""

    dsn: str
    pool: asyncpg.Pool
    embedded: EmbeddedPostgres | None = None


@contextlib.asynccontextmanager
async def embedded_or_configured_dsn(cfg: DatabaseConfig) -> AsyncIterator[tuple[str, EmbeddedPostgres | None]]:
    """Yield a DSN: the configured one, or that of an embedded server started (and stopped) here."""
    if cfg.dsn:
        yield cfg.dsn, None
        return
    server = await asyncio.to_thread(EmbeddedPostgres, cfg.data_dir)
    log.info("embedded Postgres started in %s", cfg.data_dir)
    try:
        yield server.uri(), server
    finally:
        await asyncio.to_thread(server.stop)
        log.info("embedded Postgres stopped")


@contextlib.asynccontextmanager
async def open_database(cfg: DatabaseConfig, *, migrate: bool = True, server_settings: dict[str, str] | None = None,
                        reset: Reset | None = None) -> AsyncIterator[Database]:
    """Open a pool (starting embedded Postgres when no DSN is set) and apply migrations.

    ``server_settings``: extra session settings of the pool's connections (added to the defaults);
    ``reset``: see ``create_pool``.
    """
    from .migrations import apply_migrations

    async with embedded_or_configured_dsn(cfg) as (dsn, embedded):
        if migrate:
            await apply_migrations(dsn)
        pool = await create_pool(dsn, cfg.pool_min, cfg.pool_max, server_settings, reset)
        try:
            yield Database(dsn=dsn, pool=pool, embedded=embedded)
        finally:
            await pool.close()


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10,
                      server_settings: dict[str, str] | None = None, reset: Reset | None = None) -> asyncpg.Pool:
    """A pool with short statement timeouts: the services never wait long on the database.

    ``reset`` replaces asyncpg's reset query on release (one more round trip per use) for a
    service that keeps no session state (LISTEN, session locks, SET).
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=10,
        server_settings={"application_name": "ollama-optimizer", "jit": "off", **(server_settings or {})},
        reset=reset,
    )
