"""num_batch choice per model: a UCB bandit over a few values, rewarded by prompt tokens/s.

Called only when the model reloads anyway (a num_batch change alone would reload it),
and bounded by reported GPU memory headroom (a larger batch needs a larger compute buffer).
"""
from __future__ import annotations

import math

from .state import ModelState

MIB = 1024 * 1024
# Extra compute-buffer memory over num_batch 512 (Ollama's generationBatchSurcharge); 0 = auto.
SURCHARGE = {0: 0, 256: 0, 512: 0, 1024: 768 * MIB, 2048: 2048 * MIB}
HEADROOM_RESERVE = 256 * MIB
# Untried arms are explored in this order: Ollama's own choice first, then the larger batches.
EXPLORE_ORDER = (0, 1024, 2048, 512, 256)
UCB_WEIGHT = 0.3


def _fits(model: ModelState, arm: int) -> bool:
    if model.gpu_total <= 0:
        return True
    extra = SURCHARGE.get(arm, 0) - SURCHARGE.get(model.loaded_batch, 0)
    return extra <= model.gpu_free - HEADROOM_RESERVE


def _dominant_class(model: ModelState, fallback: int) -> int:
    if not model.class_tokens:
        return fallback
    return max(model.class_tokens, key=model.class_tokens.__getitem__)


def choose_num_batch(model: ModelState, arms: tuple[int, ...], request_class: int) -> int:
    """The num_batch to load with at the next (already unavoidable) reload."""
    candidates = [a for a in arms if _fits(model, a)] or [min(arms)]
    klass = _dominant_class(model, request_class)
    stats = {a: model.arms.get((klass, a)) for a in candidates}
    untried = [a for a in candidates if stats[a] is None or stats[a].pulls == 0]
    if untried:
        ranked = sorted(untried, key=lambda a: EXPLORE_ORDER.index(a) if a in EXPLORE_ORDER else len(EXPLORE_ORDER))
        return ranked[0]
    best = max(s.mean for s in stats.values() if s is not None) or 1.0
    total = sum(s.pulls for s in stats.values() if s is not None)

    def score(arm: int) -> float:
        s = stats[arm]
        assert s is not None
        return s.mean / best + UCB_WEIGHT * math.sqrt(2 * math.log(total) / s.pulls)

    return max(candidates, key=score)
