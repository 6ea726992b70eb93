"""Ollama's loaded models (context, size, VRAM share), read from the upstream's /api/ps off the request path.

The tuner needs to know which context Ollama loads a model with when a request
carries no num_ctx (4096, or 32768 / 262144 by VRAM tier, or OLLAMA_CONTEXT_LENGTH):
it cannot be known in advance, so the gateway asks Ollama after passthrough requests
(which readings show it: default_sightings.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import metrics

log = logging.getLogger(__name__)
MAX_SENT_MODELS = 256


@dataclass(frozen=True)
class LoadedModel:
    """One /api/ps entry: context length, total size and the part in VRAM (bytes; 0 = unknown)."""

    context_length: int = 0
    size: int = 0
    size_vram: int = 0


_GAUGES = (metrics.LOADED_NUM_CTX, metrics.LOADED_NUM_BATCH, metrics.LOADED_SIZE, metrics.LOADED_VRAM_SHARE)


class LoadedModels:
    """Model → its /api/ps entry, refreshed at most every ``min_interval_s``."""

    def __init__(self, upstream: str, min_interval_s: float = 5.0) -> None:
        self._url = upstream + "/api/ps"
        self._min_interval_s = min_interval_s
        self._models: dict[str, LoadedModel] = {}
        self._last_refresh = float("-inf")
        self._task: asyncio.Task[dict[str, LoadedModel] | None] | None = None
        self._published: set[str] = set()
        self._sent_batch: OrderedDict[str, int] = OrderedDict()  # model -> num_batch last sent (0 = Ollama's)

    def sent(self, model: str, num_batch: int) -> None:
        """Remember the num_batch a request for ``model`` carried (/api/ps does not show it)."""
        self._sent_batch.pop(model, None)
        self._sent_batch[model] = num_batch
        while len(self._sent_batch) > MAX_SENT_MODELS:
            self._sent_batch.popitem(last=False)

    def get(self, model: str) -> LoadedModel:
        """Last /api/ps figures seen for ``model`` (zeros when unknown); a name without a tag is ``:latest``."""
        return find(self._models, model) or LoadedModel()

    async def context_length(self, session: aiohttp.ClientSession, model: str) -> int:
        """The context ``model`` is loaded with (0 = unknown); asks /api/ps first when it is not known yet
        (no more often than ``refresh_soon`` does). Never raises."""
        if not self.get(model).context_length:
            self.refresh_soon(session)
            if self._task is not None and not self._task.done():
                await asyncio.shield(self._task)  # a cancelled request leaves the shared refresh running
        return self.get(model).context_length

    def refresh_soon(self, session: aiohttp.ClientSession) -> None:
        """Start a background refresh unless one ran recently or is running; never raises."""
        now = time.monotonic()
        if (self._task is not None and not self._task.done()) or now - self._last_refresh < self._min_interval_s:
            return
        self._last_refresh = now
        self._task = asyncio.ensure_future(self._refresh(session))

    async def refresh(self, session: aiohttp.ClientSession) -> dict[str, LoadedModel] | None:
        """Refresh now (after a load: its context, size and VRAM share); what /api/ps listed (None: it did not
        answer). Never raises."""
        self._last_refresh = time.monotonic()
        return await self._refresh(session)

    async def _refresh(self, session: aiohttp.ClientSession) -> dict[str, LoadedModel] | None:
        try:
            async with session.get(self._url, timeout=aiohttp.ClientTimeout(total=2.0)) as response:
                if response.status != 200:
                    return None
                loaded = parse_ps(await response.json(content_type=None))
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.debug("/api/ps refresh failed: %s", exc)
            return None
        self._models.update(loaded)
        self._publish(loaded)
        return loaded

    def _publish(self, loaded: dict[str, LoadedModel]) -> None:
        """The loaded-model gauges follow /api/ps exactly: an unloaded model's series go away."""
        for model in self._published - loaded.keys():
            for gauge in _GAUGES:
                gauge.remove(model)
        for model, figures in loaded.items():
            metrics.LOADED_NUM_CTX.labels(model).set(figures.context_length)
            metrics.LOADED_NUM_BATCH.labels(model).set(
                self._sent_batch.get(model, self._sent_batch.get(model.removesuffix(":latest"), 0))
            )
            metrics.LOADED_SIZE.labels(model).set(figures.size)
            metrics.LOADED_VRAM_SHARE.labels(model).set(figures.size_vram / figures.size if figures.size else 0)
        self._published = set(loaded)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def find(models: dict[str, LoadedModel], model: str) -> LoadedModel | None:
    """``model``'s entry; a name without a tag is ``:latest``."""
    found = models.get(model)
    if found is None and ":" not in model.rsplit("/", 1)[-1]:
        found = models.get(model + ":latest")
    return found


def _count(value: Any, limit: int) -> int:
    """A sane non-negative integer field, else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= limit:
        return value
    return 0


def parse_ps(body: Any) -> dict[str, LoadedModel]:
    """``{model: LoadedModel}`` from an /api/ps answer; entries without a valid context are skipped."""
    found: dict[str, LoadedModel] = {}
    models = body.get("models") if isinstance(body, dict) else None
    for entry in models if isinstance(models, list) else ():
        if not isinstance(entry, dict):
            continue
        context = _count(entry.get("context_length"), 1 << 24)
        if not context:
            continue
        size = _count(entry.get("size"), 1 << 50)
        loaded = LoadedModel(context, size, min(_count(entry.get("size_vram"), 1 << 50), size))
        for key in ("name", "model"):
            if isinstance(entry.get(key), str):
                found[entry[key]] = loaded
    return found
