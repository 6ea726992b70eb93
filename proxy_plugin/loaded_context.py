"""Ollama's loaded context per model, read from the upstream's /api/ps off the request path.

The tuner needs to know which context Ollama loads a model with when a request
carries no num_ctx (4096, or 32768 / 262144 by VRAM tier, or OLLAMA_CONTEXT_LENGTH):
it cannot be known in advance, so the gateway asks Ollama after passthrough requests.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class LoadedContexts:
    """Model → ``context_length`` from /api/ps, refreshed at most every ``min_interval_s``."""

    def __init__(self, upstream: str, min_interval_s: float = 5.0) -> None:
        self._url = upstream + "/api/ps"
        self._min_interval_s = min_interval_s
        self._contexts: dict[str, int] = {}
        self._last_refresh = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def get(self, model: str) -> int:
        """Last context length seen for ``model`` (0 when unknown)."""
        return self._contexts.get(model, 0)

    def refresh_soon(self, session: aiohttp.ClientSession) -> None:
        """Start a background refresh unless one ran recently or is running; never raises."""
        now = time.monotonic()
        if (self._task is not None and not self._task.done()) or now - self._last_refresh < self._min_interval_s:
            return
        self._last_refresh = now
        self._task = asyncio.ensure_future(self._refresh(session))

    async def _refresh(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self._url, timeout=aiohttp.ClientTimeout(total=2.0)) as response:
                if response.status != 200:
                    return
                self._contexts.update(parse_ps(await response.json(content_type=None)))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.debug("/api/ps refresh failed: %s", exc)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def parse_ps(body: Any) -> dict[str, int]:
    """``{model: context_length}`` from an /api/ps answer; malformed entries are skipped."""
    found: dict[str, int] = {}
    models = body.get("models") if isinstance(body, dict) else None
    for entry in models if isinstance(models, list) else ():
        if not isinstance(entry, dict):
            continue
        context = entry.get("context_length")
        if isinstance(context, int) and not isinstance(context, bool) and 0 < context <= 1 << 24:
            for key in ("name", "model"):
                if isinstance(entry.get(key), str):
                    found[entry[key]] = context
    return found
