"""When the request path fails open, never send a prompt at a context it visibly does not fit.

On a failure (a missed deadline, an open breaker) the request goes out with the options the model's last
request carried, so Ollama keeps its runner. A long document after short requests would then be cut by
Ollama without a word. The guard sizes the request (matcher units, else counted here the matcher's way,
times the tokens per unit the tuner last reported for the model, else a conservative prior) and, when it
does not fit the context in effect, raises num_ctx to a rung of the tuner's default ladder that holds it
with margin, never above the model's trained context or the tuner's hard cap: one reload instead of a
silent truncation. The options sent are remembered like any others, so the requests that follow during
the failure keep the larger context (no reload back and forth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prompt_fingerprint import TOKEN_RE, approximate_count

MAX_MODELS = 1024  # bound the per-model map; models beyond it use the prior and no cap but the trained context
OVERHEAD_TOKENS = 8  # chat-template tokens per message (the tuner's TUNER_CHAT_OVERHEAD_TOKENS default)
MARGIN = 1.15  # the tuner's TUNER_MARGIN default: the rung holds a little more than this request
LADDER_MIN, LADDER_STEPS = 1024, 4  # the tuner's default ladder: 1024, 1280, 1536, 1792, 2048, 2560, ...
OLLAMA_DEFAULT_CTX = 4096  # the context Ollama gives a bare request when nothing says what is loaded


def unit_count(text: str, at_most: int) -> int:
    """Matcher units of ``text``, exactly (ASCII text by byte classes, other text by the matcher's regex); the
    character count (an upper bound) when that is at most ``at_most``."""
    if len(text) <= at_most:
        return len(text)
    return approximate_count(text) if text.isascii() else len(TOKEN_RE.findall(text))  # exact for ASCII


def rung_above(tokens: float) -> int:
    """The smallest rung of the default ladder holding ``tokens``."""
    octave = LADDER_MIN
    while True:
        for i in range(LADDER_STEPS):
            rung = octave + octave * i // LADDER_STEPS
            if rung >= tokens:
                return rung
        octave *= 2


@dataclass(frozen=True)
class TunerSaid:
    """What the tuner's last answer for a model said (0 = not said)."""

    tokens_per_unit: float = 0.0
    num_ctx_cap: int = 0
    believed_ctx: int = 0  # the context the tuner believes loaded (its num_ctx, applied or not)


class ContextGuard:
    """Per model: the tuner's last tokens-per-unit estimate, hard cap and believed context."""

    def __init__(self, tokens_per_unit: float, output_tokens: int) -> None:
        self._prior = tokens_per_unit
        self._output = output_tokens
        self._models: dict[str, TunerSaid] = {}

    @property
    def enabled(self) -> bool:
        return self._prior > 0

    def remember(self, model: str, said: TunerSaid) -> None:
        if model in self._models or len(self._models) < MAX_MODELS:
            self._models[model] = said

    def _ratio(self, model: str) -> float:
        return self._models.get(model, TunerSaid()).tokens_per_unit or self._prior

    def need(self, model: str, units: int, messages: int, num_predict: int) -> int:
        """Tokens the request needs: its prompt by the model's estimate, and room for the answer."""
        return math.ceil(units * self._ratio(model)) + OVERHEAD_TOKENS * (messages + 1) + (num_predict or self._output)

    def raise_to(
        self, model: str, text: str, units: int, messages: int, num_predict: int, in_effect: int, trained: int
    ) -> int:
        """The num_ctx to send instead of ``in_effect`` (0 = unknown: the context the tuner believes loaded,
        else Ollama's default), or 0 when the request fits or nothing larger is allowed. ``units`` 0 = count
        them in ``text``."""
        if not self.enabled:
            return 0
        said = self._models.get(model, TunerSaid())
        ctx = in_effect or said.believed_ctx or OLLAMA_DEFAULT_CTX
        if not units:  # characters bound the units: a short text is never counted
            room = ctx - 1 - OVERHEAD_TOKENS * (messages + 1) - (num_predict or self._output)
            units = unit_count(text, max(int(room / self._ratio(model)), 0))
        need = self.need(model, units, messages, num_predict)
        if need <= ctx - 1:
            return 0
        target = rung_above(need * MARGIN)
        cap = min((c for c in (trained, said.num_ctx_cap) if c > 0), default=0)
        if cap:
            target = min(target, cap)
        return target if target > ctx else 0
