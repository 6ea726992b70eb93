"""Background job: retention of stale low-count templates and the templates gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from ollama_optimizer.db import DB_UNAVAILABLE_ERRORS
from prompt_fingerprint import algorithm_version

from . import store
from .metrics import DB_ERRORS, RETENTION_DELETED, TEMPLATES
from .settings import MatcherSettings

log = logging.getLogger(__name__)


class Maintenance:
    """Runs ``run_once`` every ``maintenance_interval`` seconds until stopped."""

    def __init__(self, pool: asyncpg.Pool, settings: MatcherSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """Delete stale templates (also of other algorithm versions), refresh the gauge; returns how many."""
        deleted = await store.delete_stale(
            self._pool,
            self._settings.retention_min_observations,
            self._settings.retention_max_idle,
            algorithm_version(self._settings.shingle_size, self._settings.normalize),
            max(self._settings.retention_forget, self._settings.retention_max_idle),
        )
        RETENTION_DELETED.inc(deleted)
        TEMPLATES.set(await store.count_templates(self._pool))
        if deleted:
            log.info("retention deleted %d stale templates", deleted)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except DB_UNAVAILABLE_ERRORS as exc:
                DB_ERRORS.labels("maintenance").inc()
                log.warning("maintenance failed: %r", exc)
            await asyncio.sleep(self._settings.maintenance_interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="matcher-maintenance")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
