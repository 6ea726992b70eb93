"""Health (grpc.health.v1) that follows the database: what a SERVING answer promises.

Names a server reports:
- ``""`` (the server overall): SERVING only while the database answers and the server is not stopping;
  ``ollama-optimizer health ADDRESS`` checks this one.
- ``database``: the database answered the last probe (``SELECT 1`` every ``PROBE_SECONDS``).
- each service name: SERVING while that service can answer its clients. The matcher needs the
  database for every Match, so it follows the database. The tuner answers Recommend from memory and
  buffers Reports while the database is down (by design), so it stays SERVING: readiness probes keep
  it in rotation, and ``""``/``database`` tell the operator that learning is not being stored.
- ``liveness``: the process answers at all (a liveness probe that does not restart pods for a
  database outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from grpc_health.v1 import health_pb2

from .server import RunningServer

log = logging.getLogger(__name__)

DATABASE = "database"
PROBE_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealth:
    """Probes the pool and sets the health of ``""``, ``database`` and ``follows`` (service names)."""

    def __init__(self, running: RunningServer, pool: asyncpg.Pool, follows: tuple[str, ...]) -> None:
        self._running = running
        self._pool = pool
        self._follows = follows
        self.up: bool | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def probe(self) -> bool | None:
        """True: answered; False: gone or not answering; None: no connection free to ask (busy, not down)."""
        try:
            conn = await self._pool.acquire(timeout=PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            return None
        except Exception:  # noqa: BLE001 - refused, no socket, a broken connection: no answer
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - any failure of the probe query: no answer
            return False
        finally:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)
        return True

    async def _loop(self) -> None:
        while True:
            up = await self.probe()
            if up is not None and up != self.up:
                await self._set(up)
            await asyncio.sleep(PROBE_SECONDS)

    async def _set(self, up: bool) -> None:
        if self.up is not None or not up:
            log.log(
                logging.INFO if up else logging.WARNING,
                "database %s: health %s",
                "answers again" if up else "not answering",
                "SERVING" if up else "NOT_SERVING",
            )
        self.up = up
        status = SERVING if up else NOT_SERVING
        for name in (DATABASE, "", *self._follows):
            await self._running.health.set(name, status)


def follow_database(running: RunningServer, pool: asyncpg.Pool, follows: tuple[str, ...]) -> DatabaseHealth:
    """Start a ``DatabaseHealth`` on ``running``, stopped before the server reports NOT_SERVING at shutdown."""
    watch = DatabaseHealth(running, pool, follows)
    watch.start()
    running.before_stop.append(watch.stop)
    return watch
