"""Soft in-memory cache: an LRU with a time-to-live whose hits and misses feed the owner's counters.

The matcher caches lookup results by exact fingerprint set; the plugin caches Match answers by the exact
token prefix Match reads (``prompt_fingerprint.match_key``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


class Counts(Protocol):
    def inc(self) -> None: ...


class _NotCounted:
    def inc(self) -> None:
        return None


class SoftCache(Generic[V]):
    """LRU with a time-to-live (cachetools' TTLCache) whose lookups are counted; safe to lose, so nothing
    else depends on it."""

    def __init__(
        self,
        size: int,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        hits: Counts = _NotCounted(),
        misses: Counts = _NotCounted(),
    ) -> None:
        self.enabled = size > 0 and ttl > 0
        self._hits = hits
        self._misses = misses
        self._entries: TTLCache[Hashable, V] = TTLCache(maxsize=max(1, size), ttl=max(ttl, 1e-9), timer=clock)

    def get(self, key: Hashable) -> tuple[bool, V | None]:
        """(hit, value); counts the hit or miss."""
        try:
            value = self._entries[key]
        except KeyError:
            self._misses.inc()
            return False, None
        self._hits.inc()
        return True, value

    def put(self, key: Hashable, value: V) -> None:
        if self.enabled:
            self._entries[key] = value

    def discard(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
