"""A bounded log-bucket histogram: streaming quantiles with a fixed relative error.

Buckets grow geometrically (``2 ** (1 / resolution)``), so any positive value
lands in a bucket at most a few percent wide. Counts decay by half once the
total passes ``cap``: memory stays bounded and recent traffic weighs more.
"""

from __future__ import annotations

import math
from typing import Any


class LogHistogram:
    """Quantiles of positive values; ``upper`` quantiles round up to the bucket edge, and every quantile
    stays within the observed [min_value, max_value]."""

    __slots__ = ("cap", "counts", "max_value", "min_value", "resolution", "total")

    def __init__(self, resolution: int = 16, cap: float = 2000.0) -> None:
        self.resolution = resolution
        self.cap = cap
        self.counts: dict[int, float] = {}
        self.total = 0.0
        self.max_value = 0.0
        self.min_value = 0.0

    def _index(self, value: float) -> int:
        return math.floor(math.log2(value) * self.resolution)

    def _edge(self, index: int) -> float:
        return math.pow(2.0, index / self.resolution)

    def add(self, value: float, weight: float = 1.0) -> None:
        if not value > 0 or math.isinf(value):
            return
        index = self._index(value)
        self.counts[index] = self.counts.get(index, 0.0) + weight
        self.total += weight
        self.max_value = max(self.max_value, value)
        self.min_value = min(self.min_value, value) if self.min_value else value
        if self.total > self.cap:
            self._decay()

    def _decay(self) -> None:
        halved = {i: c / 2 for i, c in self.counts.items() if c / 2 >= 0.25}
        self.counts = halved
        self.total = sum(halved.values())

    def quantile(self, q: float, upper: bool = True) -> float:
        """The ``q`` quantile: the upper edge of its bucket (or the lower edge when ``upper`` is false),
        clamped to the observed range."""
        if self.total <= 0:
            return 0.0
        return min(max(self._bucket_quantile(q, upper), self.min_value), self.max_value or math.inf)

    def _bucket_quantile(self, q: float, upper: bool) -> float:
        target = q * self.total
        seen = 0.0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= target - 1e-9:
                return self._edge(index + 1) if upper else self._edge(index)
        top = max(self.counts)
        return self._edge(top + 1) if upper else self._edge(top)

    def to_json(self) -> dict[str, Any]:
        return {
            "r": self.resolution,
            "c": {str(i): round(c, 4) for i, c in self.counts.items()},
            "m": self.max_value,
            "n": self.min_value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, cap: float = 2000.0) -> LogHistogram:
        hist = cls(int((data or {}).get("r", 16)), cap)
        for key, count in ((data or {}).get("c") or {}).items():
            hist.counts[int(key)] = float(count)
        hist.total = sum(hist.counts.values())
        hist.max_value = float((data or {}).get("m", 0.0))
        hist.min_value = float((data or {}).get("n", 0.0))
        return hist
