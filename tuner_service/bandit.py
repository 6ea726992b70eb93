"""num_batch choice per model: a UCB bandit over a few values, rewarded by prompt tokens/s.

Called only when the model reloads anyway (a num_batch change alone would reload it), and bounded
by memory: without GPU figures no arm above ``safe`` (512) is tried, because a larger batch needs a
larger compute buffer that can push layers to the CPU; with figures an arm needs its extra buffer in
the reported headroom. After a spill the model's ``batch_cap`` bounds it further; arms below ``safe``
are tried only then (a smaller batch saves compute-buffer memory and costs prompt speed). An explicit value
is always chosen: Ollama's automatic batch (1024/2048 above 4096/32768 contexts) ignores headroom.
"""

from __future__ import annotations

import math

from .state import ModelState

MIB = 1024 * 1024
# Extra compute-buffer memory over num_batch 512 (Ollama's generationBatchSurcharge).
SURCHARGE = {256: 0, 512: 0, 1024: 768 * MIB, 2048: 2048 * MIB}
HEADROOM_RESERVE = 256 * MIB
# Untried arms are explored in this order: Ollama's classic 512 first, then the larger batches.
EXPLORE_ORDER = (512, 1024, 2048, 256)
UCB_WEIGHT = 0.3


def _fits(model: ModelState, arm: int, safe: int) -> bool:
    if model.batch_cap and arm > model.batch_cap:
        return False
    if model.gpu_total <= 0:
        return arm <= safe
    extra = SURCHARGE.get(arm, 0) - SURCHARGE.get(model.loaded_batch, 0)
    return extra <= model.gpu_free - HEADROOM_RESERVE


def _dominant_class(model: ModelState, fallback: int) -> int:
    if not model.class_tokens:
        return fallback
    return max(model.class_tokens, key=model.class_tokens.__getitem__)


def choose_num_batch(model: ModelState, arms: tuple[int, ...], request_class: int, safe: int = 512) -> int:
    """The num_batch to load with at the next (already unavoidable) reload; never 0 (Ollama's auto)."""
    arms = tuple(a for a in arms if a > 0) or (safe,)
    # Below ``safe`` a batch only saves memory (slower prompts, same decode): only after a spill capped it.
    floor = min(safe, model.batch_cap or safe)
    candidates = [a for a in arms if a >= floor and _fits(model, a, safe)] or [min(arms)]
    klass = _dominant_class(model, request_class)
    stats = {a: model.arms.get((klass, a)) for a in candidates}
    untried = [a for a in candidates if (arm := stats[a]) is None or arm.pulls == 0]
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
