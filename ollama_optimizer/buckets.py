"""Histogram bucket bounds shared by the services' metrics: Prometheus' 1, 2.5, 5 steps per decade, parsed
from decimal text so that the exposed ``le`` labels read 0.00025, not 0.00025000000000000006."""

from __future__ import annotations

import math

STEPS = ("1", "2.5", "5")


def decades(low: float, high: float) -> tuple[float, ...]:
    """Every 1, 2.5 and 5 x 10^k from ``low`` to ``high``, both included when they are steps."""
    bounds: list[float] = []
    exponent = math.floor(math.log10(low))
    while True:
        for step in STEPS:
            bound = float(f"{step}e{exponent}")
            if bound > high:
                return tuple(bounds)
            if bound >= low:
                bounds.append(bound)
        exponent += 1
