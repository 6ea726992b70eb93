"""Write-behind to Postgres, fenced by the single-writer advisory lock.

Outcome rows and dirty state wait in memory (bounded; drops counted) and are written in one
transaction per flush. Every write goes through the one session that holds the advisory lock, and
each flush transaction first checks that this session still holds it: a write can only commit while
this process is the writer (Postgres releases a session lock only when the session ends). Flushes
(the background loop's and on-demand ones) are serialised, and rows leave the buffer only once their
own transaction committed. A failed flush keeps everything for the next attempt; outcome rows are
idempotent (ON CONFLICT DO NOTHING), so a retried batch never duplicates. A process that loses the
lock hands its unwritten rows back to the core (``on_demoted``) and stops writing; one that gains
it lets the core reload stored state first (``on_promoted``). Rows whose transaction committed are
handed to ``on_stored``. Without the lock the process is a
standby: it writes nothing and tries to become the writer every ``lock_retry_seconds``.

A writer that stops talking to Postgres (hung, SIGSTOPped, its host cut off) must not keep the lock
for as long as its TCP connection lingers: once promoted, the lock session asks Postgres to end it
after ``lock_session_timeout_seconds`` of client silence (idle, idle in a transaction, or data left
unacknowledged by the client's host). A healthy writer checks its lock every flush interval, so only
a silent one loses it; a standby then takes the lock at its next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ollama_optimizer.db import DB_UNAVAILABLE_ERRORS, DbConn

from . import metrics, store
from .settings import TunerSettings

log = logging.getLogger(__name__)

S = TypeVar("S")  # what a buffered row was built from, handed back on demotion
MAX_BACKOFF_S = 2.0  # retry period while Postgres is unreachable (buffered rows wait at most this long)
ACQUIRE_TIMEOUT_S = 10.0  # a pool connection (or a new one) for the writer: never wait forever
WRITE_TIMEOUT_S = 30.0  # one flush transaction on the lock session; beyond it the session is given up
CHECK_TIMEOUT_S = 5.0  # the lock-session liveness check
RETENTION_EVERY_S = 3600.0
DB_FAILURES = (*DB_UNAVAILABLE_ERRORS, store.FenceLost)


@dataclass
class Dirty:
    """Keys whose in-memory state changed since the last successful flush."""

    models: set[str] = field(default_factory=set)
    rules: set[tuple[str, int]] = field(default_factory=set)
    deletes: set[tuple[str, int]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.models or self.rules or self.deletes)

    def merge(self, other: Dirty) -> None:
        self.models |= other.models
        self.rules |= other.rules
        self.deletes |= other.deletes


@dataclass(eq=False)
class Entry(Generic[S]):
    """One buffered outcome row and what it was built from; ``stored`` once its transaction committed."""

    row: tuple[Any, ...]
    source: S
    stored: bool = False


Snapshot = Callable[[Dirty], tuple[list[tuple[Any, ...]], list[store.RuleRow], list[tuple[Any, ...]]]]


class WriteBehind(Generic[S]):
    """Buffers rows and dirty keys; a background task flushes them while this process is the writer."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: TunerSettings,
        snapshot: Snapshot,
        on_promoted: Callable[[], Awaitable[None]],
        on_demoted: Callable[[list[S]], None],
        on_standby: Callable[[], Awaitable[None]],
        on_stored: Callable[[list[S]], None],
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._snapshot = snapshot
        self._on_promoted = on_promoted
        self._on_demoted = on_demoted
        self._on_standby = on_standby
        self._on_stored = on_stored
        self.rows: deque[Entry[S]] = deque()
        self.dirty = Dirty()
        self.is_writer = False
        self.ever_writer = False
        self._lock_conn: PoolConnectionProxy | None = None
        self._session = asyncio.Lock()  # every use of the lock session, and every flush, one at a time
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._promoted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stale_standby = False  # demoted: reload stored state once the lock is seen held elsewhere
        self._last_retention = 0.0
        self._db_reachable = True
        self._attempted = asyncio.Event()  # set after every pass of the loop
        self._progress = asyncio.Event()  # set after every flush and every demotion

    # ---- producers (event loop, never blocking) ----------------------------------------------
    def enqueue(self, row: tuple[Any, ...], source: S) -> Entry[S] | None:
        """Queue one outcome row; None (and counted) when the buffer is full."""
        if len(self.rows) >= self._settings.buffer_max:
            metrics.OUTCOMES_DROPPED.inc()
            return None
        entry = Entry(row, source)
        self.rows.append(entry)
        self._drained.clear()
        metrics.OUTCOME_BUFFER.set(len(self.rows))
        if len(self.rows) >= self._settings.flush_batch:
            self._wake.set()
        return entry

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
                await asyncio.wait_for(self._task, timeout)  # cancelled (session lock freed) on timeout
        if self.is_writer:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), timeout)
        async with self._session:
            await self._release()

    async def wait_stored(self, done: Callable[[], bool], timeout: float) -> None:
        """Flush soon and wait (bounded) until ``done()``; return early as a standby.

        A process that lost the lock has the loop try to take it again at once and waits for that
        attempt: under traffic, rows buffered during an outage are written (and acknowledged) as soon
        as Postgres is back, not at the loop's next retry (a tuner killed in between would lose them).
        While the lock stays unavailable each attempt fails fast and Reports answer at once.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        self._wake.set()
        while not done():
            remaining = end - loop.time()
            if remaining <= 0:
                return
            if not self.is_writer:
                if not self.ever_writer:
                    return
                self._attempted.clear()
                self._wake.set()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._attempted.wait(), remaining)
                if not self.is_writer:
                    return
                continue
            self._progress.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

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
        async with self._session:
            if not (self.is_writer and await self._holds_lock()):
                if self.is_writer:
                    log.warning("tuner lost its writer lock session: standing by")
                    await self._demote()
                if not await self._try_lock():
                    return self._db_reachable
            try:
                await self._flush_locked()
                await self._retention()
                return True
            except DB_FAILURES as exc:
                metrics.DB_ERRORS.labels("flush").inc()
                log.warning("tuner write-behind failed (%d rows kept): %s", len(self.rows), exc)
                return False

    async def flush(self) -> None:
        """Write one batch of rows and every dirty key in one fenced transaction (raises on failure)."""
        async with self._session:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        conn = self._lock_conn
        if conn is None:
            return
        if not self.rows and not self.dirty:
            self._drained.set()
            return
        batch = list(itertools.islice(self.rows, self._settings.flush_batch))
        dirty, self.dirty = self.dirty, Dirty()
        try:
            models, rules, arms = self._snapshot(dirty)
            started = time.perf_counter()
            await asyncio.wait_for(self._write(conn, batch, dirty, models, rules, arms), WRITE_TIMEOUT_S)
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        except BaseException as exc:
            dirty.merge(self.dirty)
            self.dirty = dirty
            if isinstance(exc, Exception) and not await self._holds_lock():
                log.warning("tuner lost its writer lock during a flush: standing by")
                await self._demote()
            raise
        for entry in batch:
            entry.stored = True
        while self.rows and self.rows[0].stored:  # by identity: only what this transaction wrote
            self.rows.popleft()
        self._on_stored([entry.source for entry in batch])
        self._progress.set()
        metrics.OUTCOMES_WRITTEN.inc(len(batch))
        metrics.OUTCOME_BUFFER.set(len(self.rows))
        if self.rows:
            self._wake.set()
        elif not self.dirty:
            self._drained.set()

    @staticmethod
    async def _write(
        conn: DbConn,
        batch: list[Entry[Any]],
        dirty: Dirty,
        models: list[tuple[Any, ...]],
        rules: list[store.RuleRow],
        arms: list[tuple[Any, ...]],
    ) -> None:
        async with conn.transaction():
            if not await store.holds_writer_lock(conn):
                raise store.FenceLost("this session no longer holds the writer lock")
            await store.write_outcomes(conn, [entry.row for entry in batch])
            if dirty.deletes:
                await store.delete_rules(conn, sorted(dirty.deletes))
            if models:
                await store.write_models(conn, models)
            if rules:
                await store.write_rules(conn, rules)
            if arms:
                await store.write_arms(conn, arms)

    async def _retention(self) -> None:
        now = time.monotonic()
        if now - self._last_retention < RETENTION_EVERY_S or self._lock_conn is None:
            return
        self._last_retention = now
        async with self._lock_conn.transaction():
            if not await store.holds_writer_lock(self._lock_conn):
                raise store.FenceLost("this session no longer holds the writer lock")
            await store.delete_old_outcomes(self._lock_conn, self._settings.retention_days)

    # ---- the single-writer lock --------------------------------------------------------------
    async def _try_lock(self) -> bool:
        """Take the advisory lock on a session held, and written through, for as long as this process writes."""
        try:
            conn = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        except DB_FAILURES:
            metrics.DB_ERRORS.labels("lock").inc()
            self._db_reachable = False
            return False
        try:
            got = await store.try_writer_lock(conn)
        except DB_FAILURES:
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
            if self._stale_standby:
                self._stale_standby = False
                await self._on_standby()
            return False
        self._lock_conn = conn
        try:
            await self._on_promoted()  # stored state first: another writer may have written meanwhile
            await self._bound_session(conn)  # after the reload, which may keep this session idle a while
        except BaseException:
            self._lock_conn = None
            await self._discard(conn)
            raise
        self.is_writer, self.ever_writer, self._stale_standby = True, True, False
        metrics.WRITER.set(1)
        self._promoted.set()
        self._wake.set()
        log.info("tuner holds the writer lock")
        return True

    async def _bound_session(self, conn: DbConn) -> None:
        """Let Postgres end the lock session once this process is silent longer than its heartbeat allows."""
        configured = self._settings.lock_session_timeout_seconds
        if configured <= 0:
            return
        unknown = await store.bound_lock_session(conn, max(configured, 4 * self._settings.flush_interval_seconds))
        if unknown:
            log.warning(
                "Postgres does not know %s: a hung writer keeps the lock until its connection dies", ", ".join(unknown)
            )

    async def _holds_lock(self) -> bool:
        """Whether the lock session is alive and still holds the lock (False on any doubt)."""
        conn = self._lock_conn
        if conn is None:
            return False
        try:  # a terminated session is closed, and its pool proxy detached: both raise
            return await asyncio.wait_for(store.holds_writer_lock(conn), CHECK_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a broken session, whatever the client library calls it
            metrics.DB_ERRORS.labels("lock").inc()
            return False

    async def _demote(self) -> None:
        """Stop being the writer: close the lock session, hand unwritten rows back, forget dirty keys."""
        await self._release()
        entries, self.rows = list(self.rows), deque()
        self.dirty = Dirty()
        self._stale_standby = True
        self._on_demoted([entry.source for entry in entries])
        self._progress.set()
        metrics.OUTCOME_BUFFER.set(0)
        with contextlib.suppress(Exception):  # the server may have gone away: no pooled connection is usable
            await self._pool.expire_connections()

    async def _release(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        self.is_writer = False
        metrics.WRITER.set(0)
        if conn is not None:
            await self._discard(conn)

    async def _discard(self, conn: PoolConnectionProxy) -> None:
        """Close a connection (releasing its session lock) and hand it back to the pool."""
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)
