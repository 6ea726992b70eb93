"""Claims made from priors hold until the request's outcome shows what it needed.

A request whose need was estimated with a prior (the default output reserve: no output seen for its
template yet) claims a rung that is deliberately generous, so the request itself is never truncated.
The claim must not keep the model at that rung for the claim idle time once the outcome shows what the
request needed: the outcome replaces it with a claim on the measured rung. Tentative claims are keyed
by the request's shape (template, prompt units, messages), bounded per model; one pushed out by the
bound becomes an ordinary claim (erring towards the larger context).
"""

from __future__ import annotations

from . import costs
from .state import ModelState

MAX_TENTATIVE = 64  # tentative claims kept per model (requests in flight with a prior-based estimate)

Shape = tuple[int, int, int]  # (template id, prompt units, message count)


def claim(model: ModelState, shape: Shape, rung: int, now: float) -> None:
    """A prior-based estimate claims ``rung`` until the outcome of a request of this shape arrives."""
    held = model.tentative.pop(shape, None)
    model.tentative[shape] = (max(rung, held[0]) if held else rung, now)
    while len(model.tentative) > MAX_TENTATIVE:
        oldest = next(iter(model.tentative))
        costs.claim(model, *model.tentative.pop(oldest))


def active_need(model: ModelState, now: float, idle_s: float) -> int:
    """The largest tentatively claimed rung within ``idle_s`` of ``now``; expired claims are dropped."""
    for shape, (_rung, seen) in list(model.tentative.items()):
        if seen < now - idle_s:
            del model.tentative[shape]
    return max((rung for rung, _seen in model.tentative.values()), default=0)


def settle(model: ModelState, shape: Shape, measured_rung: int, now: float) -> bool:
    """The outcome of a request of ``shape`` arrived: its tentative claim becomes a claim on the rung it was
    measured to need (0 = not measurable, e.g. truncated: the tentative rung is kept). False when no
    tentative claim was held for the shape."""
    held = model.tentative.pop(shape, None)
    if held is None:
        return False
    costs.claim(model, measured_rung or held[0], now)
    return True


def forget_template(model: ModelState, template_id: int) -> None:
    """An operator reset the template: its tentative claims go with it."""
    model.tentative = {shape: held for shape, held in model.tentative.items() if shape[0] != template_id}
