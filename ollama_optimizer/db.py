"""Postgres access: a pool for a configured DSN, or an embedded server when none is given."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .config import DatabaseConfig, StartupError
from .embedded_pg import EmbeddedPostgres

log = logging.getLogger(__name__)

# A database session: a connection of its own, or one borrowed from a pool (``pool.acquire()``).
DbConn = asyncpg.Connection | PoolConnectionProxy
Reset = Callable[[asyncpg.Connection], Awaitable[None]]
# Entered when the first connection attempt fails, left once the database answers (or start-up gives
# up): a service shows NOT_SERVING meanwhile (see ollama_optimizer.server.not_serving_while_waiting).
WhileWaiting = Callable[[], AbstractAsyncContextManager[object]]

BACKOFF_INITIAL_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 2.0
ATTEMPT_TIMEOUT_SECONDS = 10.0  # one connection attempt (a black-holed address), capped by the deadline
WARN_EVERY_SECONDS = 15.0  # while waiting: a WARNING at the first failure, then at most this often

# What an unreachable or failing database looks like from asyncpg: caught wherever a query may fail.
DB_UNAVAILABLE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

# OSErrors that mean "nobody answers there yet": the container, socket or DNS name is not up.
_TRANSIENT_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


class DatabaseStartupError(StartupError):
    """The database could not be used at start-up; the message says why, without the password."""


class DatabaseUnavailable(DatabaseStartupError):
    """Not reachable before the deadline (OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS)."""


class DatabaseRejected(DatabaseStartupError):
    """Reachable but refusing us (authentication, unknown database, ...): retrying would not help."""


@dataclass
class Database:
    """A connection pool plus the embedded server behind it, if this process owns one."""

    dsn: str
    pool: asyncpg.Pool
    embedded: EmbeddedPostgres | None = None


def describe_dsn(dsn: str) -> str:
    """``user@host:port/database`` of a DSN, never its password (for logs and error messages)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    if parts.scheme not in ("postgres", "postgresql"):
        return "<unparseable DSN>"
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = unquote(userinfo.partition(":")[0])
    query = parse_qs(parts.query)
    hosts = ",".join(
        f"[{h}]" if h.startswith("/") else h  # Unix socket directories in brackets
        for h in (query.get("host") or [unquote(hosts) or "localhost"])
    )
    if "port" in query and ":" not in hosts:
        hosts += ":" + query["port"][0]
    database = unquote(parts.path.lstrip("/")) or (query.get("dbname") or [user or "(default)"])[0]
    return f"{user + '@' if user else ''}{hosts}/{database}"


def _is_transient(exc: BaseException) -> bool:
    """True for errors meaning "the server is not reachable yet"; anything else fails fast."""
    if isinstance(
        exc,
        (
            asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, recovering
            asyncpg.ConnectionDoesNotExistError,
        ),
    ):  # a proxy accepted, with no server behind
        return True
    if isinstance(exc, (ConnectionError, FileNotFoundError, TimeoutError, socket.gaierror)):
        return True  # refused/reset, no Unix socket yet, no answer, DNS name not registered yet
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _attempts(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"


def _rejection_hint(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return " (the database does not exist: check the database name in OPTIMIZER_DSN)"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return " (authentication failed: check the user and password in OPTIMIZER_DSN)"
    return ""


async def wait_for_database(dsn: str, timeout: float, *, while_waiting: WhileWaiting | None = None) -> None:
    """Return once ``dsn`` accepts a connection, retrying for up to ``timeout`` seconds.

    Only "not reachable yet" errors are retried (refused, no socket, DNS, timeouts, "the database
    system is starting up"), with exponential backoff (0.1 s doubling up to 2 s). Raises
    ``DatabaseRejected`` at once for anything else (wrong password, unknown database or role, ...)
    and ``DatabaseUnavailable`` after the deadline. ``while_waiting`` is entered at the first
    failure and left before returning or raising.
    """
    where = describe_dsn(dsn)
    started = time.monotonic()
    deadline = started + max(timeout, 0.0)
    delay = BACKOFF_INITIAL_SECONDS
    attempts = 0
    last_warning = started
    async with contextlib.AsyncExitStack() as waiting:
        while True:
            attempts += 1
            attempt_timeout = min(ATTEMPT_TIMEOUT_SECONDS, max(deadline - time.monotonic(), 1.0))
            try:
                conn = await asyncpg.connect(dsn, timeout=attempt_timeout)
            except Exception as exc:
                if not _is_transient(exc):
                    raise DatabaseRejected(
                        f"connecting to database {where} failed (not retried): {_reason(exc)}{_rejection_hint(exc)}"
                    ) from exc
                now = time.monotonic()
                if now >= deadline:
                    raise DatabaseUnavailable(
                        f"database {where} not reachable after {now - started:.1f}s ({_attempts(attempts)}, "
                        f"OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS={timeout:g}); last error: {_reason(exc)}"
                    ) from exc
                if attempts == 1:
                    log.warning(
                        "database %s not reachable yet (%s); retrying for up to %gs", where, _reason(exc), timeout
                    )
                    if while_waiting is not None:
                        await waiting.enter_async_context(while_waiting())
                elif now - last_warning >= WARN_EVERY_SECONDS:
                    last_warning = now
                    log.warning(
                        "still waiting for database %s: %.0fs of %gs, %s, last error: %s",
                        where,
                        now - started,
                        timeout,
                        _attempts(attempts),
                        _reason(exc),
                    )
                await asyncio.sleep(min(delay, deadline - now))
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                continue
            await conn.close()
            if attempts > 1:
                log.info(
                    "database %s reachable after %.1fs (%s)", where, time.monotonic() - started, _attempts(attempts)
                )
            return


@contextlib.asynccontextmanager
async def embedded_or_configured_dsn(
    cfg: DatabaseConfig, *, while_waiting: WhileWaiting | None = None
) -> AsyncIterator[tuple[str, EmbeddedPostgres | None]]:
    """Yield a DSN: the configured one (once it accepts connections, see ``wait_for_database``),
    or that of an embedded server started (and stopped) here."""
    if cfg.dsn:
        await wait_for_database(cfg.dsn, cfg.connect_timeout_seconds, while_waiting=while_waiting)
        yield cfg.dsn, None
        return
    server = await asyncio.to_thread(EmbeddedPostgres, cfg.data_dir, cfg.embedded_shared_buffers_mb)
    log.info("embedded Postgres started in %s", cfg.data_dir)
    try:
        yield server.uri(), server
    finally:
        await asyncio.to_thread(server.stop)
        log.info("embedded Postgres stopped")


async def wait_for_schema(dsn: str, timeout: float, *, while_waiting: WhileWaiting | None = None) -> None:
    """Return once ``dsn`` has every expand migration this release needs (``ollama-optimizer migrate``
    applies them: a Kubernetes Job, a compose service); polls for up to ``timeout`` seconds, with
    ``while_waiting`` entered meanwhile, then raises ``DatabaseStartupError`` naming the missing steps."""
    from .migrations import missing_expand_steps

    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    announced = False
    async with contextlib.AsyncExitStack() as waiting:
        while missing := await missing_expand_steps(dsn):
            if loop.time() >= deadline:
                raise DatabaseStartupError(
                    f"database {describe_dsn(dsn)} lacks schema migrations {missing} this release needs: run "
                    "`ollama-optimizer migrate` (or set OPTIMIZER_MIGRATE_ON_START=true on one process)"
                )
            if not announced:
                announced = True
                log.warning(
                    "database %s lacks schema migrations %s; waiting up to %gs for `ollama-optimizer migrate`",
                    describe_dsn(dsn),
                    missing,
                    timeout,
                )
                if while_waiting is not None:
                    await waiting.enter_async_context(while_waiting())
            await asyncio.sleep(min(BACKOFF_MAX_SECONDS, max(deadline - loop.time(), 0.0)))


@contextlib.asynccontextmanager
async def open_database(
    cfg: DatabaseConfig,
    *,
    migrate: bool | None = None,
    server_settings: dict[str, str] | None = None,
    reset: Reset | None = None,
    while_waiting: WhileWaiting | None = None,
) -> AsyncIterator[Database]:
    """Open a pool (starting embedded Postgres when no DSN is set) over a schema this release can use.

    A configured database that is not reachable yet is waited for (``wait_for_database``;
    ``while_waiting`` runs meanwhile). ``migrate`` (default: OPTIMIZER_MIGRATE_ON_START, false)
    applies the expand migrations here; otherwise they are waited for (``wait_for_schema``).
    ``server_settings``: extra session settings of the pool's connections (added to the
    defaults); ``reset``: see ``create_pool``.
    """
    from .migrations import apply_migrations

    if migrate is None:
        migrate = cfg.migrate_on_start
    async with embedded_or_configured_dsn(cfg, while_waiting=while_waiting) as (dsn, embedded):
        if migrate:
            await apply_migrations(dsn)
        else:
            await wait_for_schema(dsn, cfg.connect_timeout_seconds, while_waiting=while_waiting)
        pool = await create_pool(dsn, cfg.pool_min, cfg.pool_max, server_settings, reset)
        try:
            yield Database(dsn=dsn, pool=pool, embedded=embedded)
        finally:
            await pool.close()


async def create_pool(
    dsn: str,
    min_size: int = 2,
    max_size: int = 10,
    server_settings: dict[str, str] | None = None,
    reset: Reset | None = None,
) -> asyncpg.Pool:
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
