"""Which templates the tuner keeps in memory: loaded on demand, the least recently used evicted beyond a bound.

Start-up loads models, arms and pinned templates only. A Recommend for a template that is not in memory
is answered from the model's state at once and fetches the template's stored rule in the background; an
operator call (explain, pin, reset) and a Report of its outcomes wait for it. Memory holds at most
``limit`` templates per model: beyond it the least recently used ones that are neither pinned nor waiting
to be written are dropped (their rules stay in Postgres).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from itertools import islice

import asyncpg

from ollama_optimizer.db import DB_UNAVAILABLE_ERRORS

from . import store
from .policy import Policy
from .state import ModelState
from .writer import Dirty

log = logging.getLogger(__name__)

MAX_PENDING = 64  # background fetches in flight
MAX_MISSING = 100_000  # (model, template) pairs known to have no stored rule
EVICT_SCAN = 64  # templates looked at beyond the excess per eviction
FETCH_TIMEOUT_S = 2.0


class Residency:
    def __init__(self, pool: asyncpg.Pool, policy: Policy, limit: int, dirty: Callable[[], Dirty]) -> None:
        self._pool, self._policy, self.limit, self._dirty = pool, policy, max(1, limit), dirty
        self._pending: set[tuple[str, int]] = set()
        self._missing: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def want(self, name: str, template_id: int) -> None:
        """A request named a template that is not in memory: fetch its stored rule in the background."""
        key = (name, template_id)
        if key in self._pending or key in self._missing or len(self._pending) >= MAX_PENDING:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._fetch(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ensure(self, name: str, template_id: int) -> None:
        """Load the template now when it is stored and not in memory (operator calls, outcomes to fold)."""
        model = self._policy.models.get(name)
        if (
            model is not None
            and template_id
            and template_id not in model.templates
            and (name, template_id) not in self._missing
        ):
            await self._fetch((name, template_id))

    async def _fetch(self, key: tuple[str, int]) -> None:
        try:
            async with self._pool.acquire(timeout=FETCH_TIMEOUT_S) as conn:
                template = await store.load_template(conn, *key)
        except DB_UNAVAILABLE_ERRORS as exc:
            log.debug("template %s not loaded: %s", key, exc)
            return
        finally:
            self._pending.discard(key)
        model = self._policy.models.get(key[0])
        if model is None or key in self._dirty().deletes:  # reset, not yet written: stays forgotten
            return
        if template is None:
            self.forget(*key)
            return
        model.templates.setdefault(key[1], template)  # an outcome may have created it meanwhile: keep that one
        self.bound(key[0], model)

    def forget(self, name: str, template_id: int) -> None:
        """Nothing is (or soon will be) stored for this template: never fetch it."""
        self._missing[(name, template_id)] = None
        if len(self._missing) > MAX_MISSING:
            self._missing.popitem(last=False)

    def bound(self, name: str, model: ModelState) -> None:
        """Drop the least recently used templates beyond the limit (never pinned or unwritten ones)."""
        excess = len(model.templates) - self.limit
        if excess <= 0:
            return
        dirty = self._dirty().rules
        for template_id in list(islice(iter(model.templates), excess + EVICT_SCAN)):
            if excess <= 0:
                break
            if model.templates[template_id].pinned or (name, template_id) in dirty:
                continue
            del model.templates[template_id]
            self._missing.pop((name, template_id), None)
            excess -= 1

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
