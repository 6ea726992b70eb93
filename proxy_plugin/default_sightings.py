"""Which /api/ps contexts show Ollama's default context, judged from what this gateway sent.

A request sent without ``num_ctx`` runs at Ollama's default (a runner at another context is reloaded for it),
so ``/api/ps`` read after it ended shows the default: ``context_length`` (Ollama v0.10+; older versions do
not report it and nothing is learned). The reading is the default only when no request of the model with a
``num_ctx`` went out from this one's sending until the reading: that one may have reloaded the runner (a
concurrent client, or a request the optimizer sized). A reading taken before the request ended (the
rate-limited background refresh) may show a runner that was loaded since; it counts only when it repeats a
default already seen. Another client of the same Ollama is invisible here: its own ``num_ctx`` and the default
look alike in ``/api/ps``, so its loads teach nothing unless a reading after a request of this gateway shows
them.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_MODELS = 256


class DefaultSightings:
    """Per model: requests sent with a ``num_ctx`` (a count), and the default context last seen."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self._max = max_models
        self._explicit: OrderedDict[str, int] = OrderedDict()
        self._seen: OrderedDict[str, int] = OrderedDict()

    def sent(self, model: str, num_ctx: int) -> int:
        """Note a request going upstream; returns its mark (for ``attribute``)."""
        if num_ctx:
            self._explicit[model] = self._explicit.pop(model, 0) + 1
            _bound(self._explicit, self._max)
        return self._explicit.get(model, 0)

    def seen(self, model: str) -> int:
        """The default context last seen for ``model`` (0 = none yet)."""
        return self._seen.get(model, 0)

    def wants_reading(self, model: str, num_ctx: int) -> bool:
        """Whether a fresh /api/ps reading after this request could teach the default (none seen yet)."""
        return not num_ctx and model not in self._seen

    def attribute(self, model: str, num_ctx: int, mark: int, context: int, fresh: bool) -> int:
        """The default context an /api/ps ``context`` of ``model`` shows after a request sent with ``num_ctx``
        and ``mark``; ``fresh``: read after the request ended. 0 = not the default, or not known to be."""
        if num_ctx or context <= 0:
            return 0
        if fresh and self._explicit.get(model, 0) == mark:
            self._seen.pop(model, None)
            self._seen[model] = context
            _bound(self._seen, self._max)
            return context
        return context if self._seen.get(model) == context else 0


def _bound(entries: OrderedDict[str, int], limit: int) -> None:
    while len(entries) > limit:
        entries.popitem(last=False)
