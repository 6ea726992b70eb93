"""Bounded Prometheus label values."""

from __future__ import annotations


class BoundedLabel:
    """The first ``limit`` distinct values keep their name; later ones become ``"other"``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit and value:
            self._seen.add(value)
            return value
        return "other"
