"""Soft in-memory cache: an LRU with a time-to-live whose hits and misses feed the owner's counters.

The matcher caches lookup results by exact fingerprint set; the plugin caches Match answers by the exact
token prefix Match reads (``matcher_service.simhash.match_key``).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")
_MISSING = object()


class Counts(Protocol):
    def inc(self) -> None: ...


class _NotCounted:
    def inc(self) -> None:
        return None


class SoftCache(Generic[V]):
    """LRU with a time-to-live; safe to lose, so nothing else depends on it."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic,
                 hits: Counts = _NotCounted(), misses: Counts = _NotCounted()) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._hits = hits
        self._misses = misses
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._size > 0 and self._ttl > 0

    def get(self, key: Hashable) -> tuple[bool, V | None]:
        """(hit, value); counts the hit or miss."""
        entry = self._entries.get(key, _MISSING)
        if entry is not _MISSING:
            expires, value = entry  # type: ignore[misc]
            if expires > self._clock():
                self._entries.move_to_end(key)
                self._hits.inc()
                return True, value
            del self._entries[key]
        self._misses.inc()
        return False, None

    def put(self, key: Hashable, value: V) -> None:
        self._entries[key] = (self._clock() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
