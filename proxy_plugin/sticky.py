"""The options last applied per model, re-sent when the services fail.

Ollama reloads a runner whenever num_ctx or num_batch differ from what it was loaded with, including
a request that omits them after one that set them. Once the optimizer has loaded a model with its
options, a bare passthrough during a matcher/tuner outage would cost a reload (and possibly truncate
at the smaller default) and the next optimized request another reload; re-sending the same options
costs nothing. After ``ttl_s`` (Ollama's keep_alive default) the model has likely been unloaded, and a
passthrough is free again.
"""
from __future__ import annotations

import time

MAX_MODELS = 1024  # bound the map; models beyond it simply pass through on failure


class StickyOptions:
    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._last: dict[str, tuple[int, int, float]] = {}

    def remember(self, model: str, num_ctx: int, num_batch: int) -> None:
        if self._ttl_s <= 0 or (model not in self._last and len(self._last) >= MAX_MODELS):
            return
        self._last[model] = (num_ctx, num_batch, time.monotonic())

    def recall(self, model: str) -> tuple[int, int] | None:
        """(num_ctx, num_batch) applied to ``model`` within the TTL, else None."""
        entry = self._last.get(model)
        if entry is None or time.monotonic() - entry[2] > self._ttl_s:
            return None
        return entry[0], entry[1]
