"""Soft in-memory cache (per replica): exact fingerprint set → lookup result, short TTL, bounded size."""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .metrics import CACHE_REQUESTS

V = TypeVar("V")
_MISSING = object()
_HITS, _MISSES = CACHE_REQUESTS.labels("hit"), CACHE_REQUESTS.labels("miss")


class SoftCache(Generic[V]):
    """LRU with a time-to-live; safe to lose, so nothing else depends on it."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
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
                _HITS.inc()
                return True, value
            del self._entries[key]
        _MISSES.inc()
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
