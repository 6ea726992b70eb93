"""Models that share one Ollama host's GPU, planned together: the contexts of the models in use fit side by side.

Ollama evicts a loaded model when another one's load does not fit beside it, and the evicted model's next
request loads it again (evicting the other in turn while both stay in use). A load of unchanged options while
the model was in use (an eviction; after the keep-alive it is an expiry, which says nothing about memory)
shows that the models in use did not fit at their contexts: the sum of their /api/ps sizes there bounds the
host's memory from above (the GPU's total, when the gateway reports it, bounds it from the start). A model's
size at another context follows from a size seen and its KV bytes per token.

Growth then stays within the room the other models in use leave, at the tight margin when the normal one
would not fit (a request that needs more still gets it: the eviction is priced like a reload,
costs.pay_eviction); and a model that the other's load displaced, whose next request loads it anyway, comes
back at a context that fits beside the others wherever its need allows.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import costs
from .hosts import split_key
from .state import ModelState

FIT_SLACK = 0.01  # sizes are estimates: a plan fits when its sum stays this share below the bound
MAX_LOADS = 8  # load times kept per model


def size_at(model: ModelState, ctx: int) -> int:
    """The model's /api/ps size at ``ctx`` from the nearest size seen and its KV bytes per token (0 = unknown)."""
    if not model.memory or ctx <= 0:
        return 0
    (seen_ctx, _batch), (size, _vram) = min(model.memory.items(), key=lambda item: abs(item[0][0] - ctx))
    per_token = costs.kv_bytes_per_token(model) or model.kv_bytes_per_token
    if seen_ctx != ctx and per_token <= 0:
        return 0
    return max(0, int(size + per_token * (ctx - seen_ctx)))


def others_in_use(models: dict[str, ModelState], key: str, now: float, idle_s: float) -> Iterator[ModelState]:
    """The other managed models on ``key``'s host with a request within ``idle_s`` of ``now`` (still loaded)."""
    host = split_key(key)[1]
    for name, other in models.items():
        if name != key and split_key(name)[1] == host and other.managed and other.used_at >= now - idle_s:
            yield other


def bound(bounds: dict[str, int], model: ModelState, key: str) -> int:
    """Bytes the models of ``key``'s host did not fit in (0 = unknown)."""
    learned = bounds.get(split_key(key)[1], 0)
    total = model.gpu_total
    return min(b for b in (learned, total) if b > 0) if learned or total else 0


def note_load(model: ModelState, ctx: int, now: float) -> None:
    model.loaded_at.pop(ctx, None)
    model.loaded_at[ctx] = now
    while len(model.loaded_at) > MAX_LOADS:
        del model.loaded_at[next(iter(model.loaded_at))]


def largest_since(model: ModelState, since: float) -> int:
    """The largest context the model was loaded with since ``since`` (its loaded context at least)."""
    return max([model.loaded_ctx, *(ctx for ctx, at in model.loaded_at.items() if at >= since)])


def note_eviction(bounds: dict[str, int], key: str, model: ModelState, others: list[ModelState], since: float) -> None:
    """``model`` was evicted at its loaded context after ``since`` (its previous request) while ``others``
    were in use: the sum at the largest contexts they were loaded with meanwhile did not fit."""
    sizes = [size_at(model, model.loaded_ctx), *(size_at(o, largest_since(o, since)) for o in others)]
    if not others or not all(sizes):
        return
    host = split_key(key)[1]
    total = sum(sizes)
    bounds[host] = min(bounds.get(host, total), total)


def room(limit: int, model: ModelState, taken: list[int], rungs: list[int]) -> int:
    """The largest rung of ``model`` that fits within ``limit`` bytes beside the ``taken`` sizes of the other
    models in use; 0 = no bound known (no limit, no other model in use, or a size unknown)."""
    if not limit or not taken or not all(taken):
        return 0
    free = limit * (1 - FIT_SLACK) - sum(taken)
    fitting = 0
    for rung in rungs:
        size = size_at(model, rung)
        if not size:
            return 0
        if size > free:
            break
        fitting = rung
    return fitting or rungs[0]


def displace(limit: int, model: ModelState, others: list[ModelState]) -> None:
    """``model`` was just loaded: the others that no longer fit beside it were evicted by that load."""
    if not limit:
        return
    mine = size_at(model, model.loaded_ctx)
    for other in others:
        theirs = size_at(other, other.loaded_ctx)
        if mine and theirs and mine + theirs > limit * (1 - FIT_SLACK):
            other.displaced = True
