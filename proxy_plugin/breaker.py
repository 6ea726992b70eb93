"""Circuit breaker: opens after N consecutive failures, lets one probe through after a cool-down."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    """Gauge values: closed 0, open 1, half-open 2."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Not thread-safe: used from one event loop."""

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self._threshold = max(1, threshold)
        self._cooldown = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = State.CLOSED

    def rejecting(self) -> bool:
        """Open and still cooling down: a cheap check that, unlike ``allow``, claims no probe slot."""
        return self.state is State.OPEN and self._clock() - self._opened_at < self._cooldown

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self._clock() - self._opened_at < self._cooldown:
                return False
            self._set(State.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self.state is not State.CLOSED:
            self._set(State.CLOSED)

    def failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self.state is State.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._set(State.OPEN)

    def abandon(self) -> None:
        """A call ended without a verdict (e.g. cancelled): free the half-open probe slot."""
        self._probing = False

    def _set(self, state: State) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)
