"""The runner options each model was last sent with, re-sent when the services fail.

Ollama reloads a runner whenever num_ctx or num_batch differ from what it was loaded with, including
a request that omits them after one that set them. During a matcher/tuner outage a request therefore
goes out with the options the model's last request carried (none, if it carried none): Ollama sees no
change and does not reload. Every request sent refreshes the entry, so it holds for any outage length
while traffic flows. An entry expires ``ttl_s`` after the model's last request (Ollama's keep_alive
default): by then Ollama has unloaded the model and any options cost the same load.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_MODELS = 1024  # bound the map; models beyond it fall back to what the host knows (or pass through)


class StickyOptions:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._last: dict[str, tuple[int, int, float]] = {}

    def remember(self, model: str, num_ctx: int, num_batch: int) -> None:
        """``model`` was sent with these options now (0 = not set: Ollama's automatic value)."""
        if self._ttl_s <= 0 or (model not in self._last and len(self._last) >= MAX_MODELS):
            return
        self._last[model] = (num_ctx, num_batch, self._clock())

    def recall(self, model: str) -> tuple[int, int] | None:
        """(num_ctx, num_batch) ``model`` was last sent with, within the TTL, else None."""
        entry = self._last.get(model)
        if entry is None or self._clock() - entry[2] > self._ttl_s:
            return None
        return entry[0], entry[1]
