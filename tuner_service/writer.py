"""Write-behind to Postgres under a single-writer advisory lock.

Outcome rows and dirty state wait in memory (bounded; drops counted) and are written in one
transaction per flush. A failed flush keeps everything for the next attempt; outcome rows are
idempotent (ON CONFLICT DO NOTHING), so a retried batch never duplicates. Without the lock the
process is a standby: it writes nothing and keeps trying to become the writer.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import metrics, store
from .settings import TunerSettings

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 2.0  # retry period while Postgres is unreachable (buffered rows wait at most this long)
ACQUIRE_TIMEOUT_S = 10.0  # a pool connection (or a new one) for the writer: never wait forever
RETENTION_EVERY_S = 3600.0


@dataclass
class Dirty:
    """Keys whose in-memory state changed since the last successful flush."""

    models: set[str] = field(default_factory=set)
    rules: set[tuple[str, int]] = field(default_factory=set)
    deletes: set[tuple[str, int]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.models or self.rules or self.deletes)

    def merge(self, other: "Dirty") -> None:
        self.models |= other.models
        self.rules |= other.rules
        self.deletes |= other.deletes


Snapshot = Callable[[Dirty], tuple[list[tuple[Any, ...]], list[store.RuleRow], list[tuple[Any, ...]]]]


class WriteBehind:
    """Buffers rows and dirty keys; a background task flushes them while this process is the writer."""

    def __init__(self, pool: asyncpg.Pool, settings: TunerSettings, snapshot: Snapshot,
                 on_promoted: Callable[[], Awaitable[None]]) -> None:
        self._pool = pool
        self._settings = settings
        self._snapshot = snapshot
        self._on_promoted = on_promoted
        self.rows: deque[tuple[Any, ...]] = deque()
        self._flush_lock = asyncio.Lock()
        self.dirty = Dirty()
        self.is_writer = False
        self.ever_writer = False
        self._lock_conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._promoted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_retention = 0.0
        self._db_reachable = True
        self._attempted = asyncio.Event()  # set after every pass of the loop
        self.enqueued = 0  # rows ever queued (sequence of the last one)
        self.written = 0  # rows ever written (FIFO, so every row up to this sequence is stored)
        self._progress = asyncio.Event()

    # ---- producers (event loop, never blocking) ----------------------------------------------
    def enqueue(self, row: tuple[Any, ...]) -> bool:
        """Queue one outcome row; False (and counted) when the buffer is full."""
        if len(self.rows) >= self._settings.buffer_max:
            metrics.OUTCOMES_DROPPED.inc()
            return False
        self.rows.append(row)
        self.enqueued += 1
        self._drained.clear()
        metrics.OUTCOME_BUFFER.set(len(self.rows))
        if len(self.rows) >= self._settings.flush_batch:
            self._wake.set()
        return True

    def touch(self, model: str, template_id: int = 0) -> None:
        self.dirty.models.add(model)
        if template_id:
            self.dirty.rules.add((model, template_id))
        self._drained.clear()

    def forget(self, model: str, template_id: int) -> None:
        """Delete a rule at the next flush; template 0 deletes the whole model (rules, arms, model row)."""
        self.dirty.deletes.add((model, template_id))
        self.dirty.rules -= {key for key in self.dirty.rules if key[0] == model and template_id in (0, key[1])}
        if template_id == 0:
            self.dirty.models.discard(model)
        self._drained.clear()
        self._wake.set()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._try_lock()
        self._task = asyncio.create_task(self._run(), name="tuner-write-behind")

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout)
        if self.is_writer:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), timeout)
        await self._drop_lock()

    async def wait_written(self, seq: int, timeout: float) -> bool:
        """Flush soon and wait (bounded) until row ``seq`` is stored; False on timeout or as a standby.

        A process that lost the lock with its database has the loop try again at once and waits for
        that attempt: under traffic, rows buffered during an outage are written (and acknowledged) as
        soon as Postgres is back, not at the loop's next retry (a tuner killed in between would lose
        them). While the database stays unreachable each attempt fails fast and Reports answer at once.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        self._wake.set()
        while self.written < seq:
            remaining = end - loop.time()
            if remaining <= 0:
                return False
            if not self.is_writer:
                if not self.ever_writer:
                    return False
                self._attempted.clear()
                self._wake.set()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._attempted.wait(), remaining)
                if not self.is_writer:
                    return False
                continue
            self._progress.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        return True

    async def wait_drained(self) -> None:
        """Return once everything buffered has been written."""
        await self._drained.wait()

    async def wait_writer(self) -> None:
        """Return once this process holds the writer lock."""
        await self._promoted.wait()

    # ---- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = self._settings.flush_interval_seconds
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()
            if self._stopping:
                return
            try:
                ok = await self._tick()
            except Exception:  # the loop must survive anything: what it buffers is written by no one else
                metrics.DB_ERRORS.labels("loop").inc()
                log.exception("tuner write-behind: unexpected error (%d rows kept)", len(self.rows))
                ok = False
            finally:
                self._attempted.set()
            backoff = self._settings.flush_interval_seconds if ok else min(MAX_BACKOFF_S, backoff * 2)
            if not self.is_writer and ok:
                backoff = self._settings.lock_retry_seconds

    async def _tick(self) -> bool:
        if not (self.is_writer and await self._lock_alive()):
            if not await self._try_lock():
                return self._db_reachable
        try:
            await self.flush()
            await self._retention()
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
            metrics.DB_ERRORS.labels("flush").inc()
            log.warning("tuner write-behind failed (%d rows kept): %s", len(self.rows), exc)
            return False

    async def flush(self) -> None:
        """Write one batch of rows and every dirty key in one transaction (raises on failure); one flush at a
        time (the background loop and a Summary may both flush: each batch must be popped once)."""
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        if not self.is_writer:
            return
        if not self.rows and not self.dirty:
            self._drained.set()
            return
        batch = [self.rows[i] for i in range(min(len(self.rows), self._settings.flush_batch))]
        dirty, self.dirty = self.dirty, Dirty()
        try:
            models, rules, arms = self._snapshot(dirty)
            started = time.perf_counter()
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn, conn.transaction():
                await store.write_outcomes(conn, batch)
                if dirty.deletes:
                    await store.delete_rules(conn, sorted(dirty.deletes))
                if models:
                    await store.write_models(conn, models)
                if rules:
                    await store.write_rules(conn, rules)
                if arms:
                    await store.write_arms(conn, arms)
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        except BaseException:
            dirty.merge(self.dirty)
            self.dirty = dirty
            raise
        for _ in batch:
            self.rows.popleft()
        self.written += len(batch)
        self._progress.set()
        metrics.OUTCOMES_WRITTEN.inc(len(batch))
        metrics.OUTCOME_BUFFER.set(len(self.rows))
        if self.rows:
            self._wake.set()
        elif not self.dirty:
            self._drained.set()

    async def _retention(self) -> None:
        now = time.monotonic()
        if now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            await store.delete_old_outcomes(conn, self._settings.retention_days)

    # ---- the single-writer lock --------------------------------------------------------------
    async def _try_lock(self) -> bool:
        """Take the advisory lock on a connection held for as long as this process writes."""
        try:
            conn = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            metrics.DB_ERRORS.labels("lock").inc()
            self._db_reachable = False
            return False
        try:
            got = await store.try_writer_lock(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            metrics.DB_ERRORS.labels("lock").inc()
            self._db_reachable = False
            await self._discard(conn)
            return False
        except asyncio.CancelledError:  # shutdown mid-attempt: closing the session frees any lock it took
            await self._discard(conn)
            raise
        self._db_reachable = True
        if not got:
            await self._pool.release(conn)
            return False
        self._lock_conn, self.is_writer = conn, True
        metrics.WRITER.set(1)
        if not self.ever_writer:
            self.ever_writer = True
            await self._on_promoted()
        self._promoted.set()
        log.info("tuner holds the writer lock")
        return True

    async def _lock_alive(self) -> bool:
        conn = self._lock_conn
        if conn is None:
            return False
        try:
            await conn.fetchval("SELECT 1")
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            metrics.DB_ERRORS.labels("lock").inc()
            log.warning("tuner lost its database session: writer lock released, standing by")
            await self._drop_lock()
            with contextlib.suppress(Exception):  # the server went away: no pooled connection is usable
                await self._pool.expire_connections()
            return False

    async def _drop_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        self.is_writer = False
        metrics.WRITER.set(0)
        if conn is not None:
            await self._discard(conn)

    async def _discard(self, conn: asyncpg.Connection) -> None:
        """Close a connection (releasing its session lock) and hand it back to the pool."""
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)
