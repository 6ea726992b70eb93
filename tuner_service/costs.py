"""What a context costs a model's traffic: claims that expire, speeds and memory by rung, rent paid.

Pure functions over ModelState; every cost is in seconds. Sizes are bounded by the ladder (a few dozen
rungs), never by the number of templates.
"""

from __future__ import annotations

import math

from .state import ModelState

MEMORY_POINTS = 8  # (num_ctx, num_batch) memory figures kept per model
SPILL_SLOWDOWN_PRIOR = 10.0  # time of a fully CPU-resident layer / a GPU one, before speeds are measured
SHRINK_PRIOR_GAIN = 0.02  # share of request time saved per halving when nothing is known of speed or memory


# ---- claims ----------------------------------------------------------------------------------
def claim(model: ModelState, rung: int, now: float) -> None:
    model.claims[rung] = max(now, model.claims.get(rung, now))


def active_need(model: ModelState, now: float, idle_s: float) -> int:
    """The largest rung a request needed within ``idle_s`` seconds of ``now``; expired claims are dropped."""
    top = 0
    for rung, seen in list(model.claims.items()):
        if seen < now - idle_s:
            del model.claims[rung]
        elif rung > top:
            top = rung
    return top


# ---- memory -----------------------------------------------------------------------------------
def remember_memory(model: ModelState, config: tuple[int, int], size: int, vram: int) -> None:
    """Keep /api/ps figures of ``config``; a size not between those seen at smaller and larger contexts of the
    same num_batch is a runner's figures read after another load (stale) and is left out."""
    for (ctx, batch), (seen, _vram) in model.memory.items():
        if batch == config[1] and ctx != config[0] and (ctx < config[0]) != (seen < size):
            return
    model.memory.pop(config, None)
    model.memory[config] = (size, vram)
    while len(model.memory) > MEMORY_POINTS:
        del model.memory[next(iter(model.memory))]


def kv_bytes_per_token(model: ModelState) -> float:
    """KV (and context-sized buffer) bytes per context token from /api/ps sizes at two contexts, 0 = unknown."""
    best = 0.0
    points = sorted(model.memory.items())
    for (ctx_a, batch_a), (size_a, _) in points:
        for (ctx_b, batch_b), (size_b, _) in points:
            if batch_a == batch_b and ctx_b > ctx_a and size_b > size_a:
                best = max(best, (size_b - size_a) / (ctx_b - ctx_a))
    return best


def kv_bytes(model: ModelState) -> float:
    """KV bytes of the loaded context (the context itself when the bytes per token are not known)."""
    return model.loaded_ctx * (kv_bytes_per_token(model) or 1.0)


def fit_limit(model: ModelState) -> int:
    """The largest context known (or predicted from KV bytes/token) to sit entirely in VRAM; 0 = unknown."""
    fitted = [ctx for (ctx, _), (size, vram) in model.memory.items() if size and vram >= size]
    known = max(fitted, default=0)
    per_token = kv_bytes_per_token(model)
    spilled = [(ctx, size, vram) for (ctx, _), (size, vram) in model.memory.items() if 0 < vram < size]
    if per_token <= 0 or not spilled:
        return known
    ctx, size, vram = min(spilled)
    return max(known, int(ctx - (size - vram) / per_token))


def in_ram(model: ModelState) -> bool:
    """No byte of the model in VRAM at any context seen (a CPU-only host: /api/ps size_vram 0). Its layers run
    on the CPU whatever the context, so a context costs load time and memory there, never speed."""
    return bool(model.memory) and all(vram == 0 for _, vram in model.memory.values())


def spill_share(model: ModelState, ctx: int) -> float:
    """Share of the model on the CPU at ``ctx`` beyond where it always runs: measured, else predicted from the
    fit limit; 0 = none known, and 0 on a CPU-only host."""
    if in_ram(model):
        return 0.0
    shares = [1 - vram / size for (c, _), (size, vram) in model.memory.items() if c == ctx and size]
    if shares:
        return max(0.0, shares[-1])
    per_token = kv_bytes_per_token(model)
    spilled = [(c, size, vram) for (c, _), (size, vram) in model.memory.items() if 0 < vram < size]
    if per_token <= 0 or not spilled:
        return 0.0
    known, size, room = max(spilled)  # the model gets ``room`` bytes of VRAM
    predicted = size + per_token * (ctx - known)
    return max(0.0, 1 - room / predicted) if predicted > 0 else 0.0


# ---- speed ------------------------------------------------------------------------------------
def saving_share(model: ModelState, low: int, high: int) -> float:
    """Share of a request's time saved running at ``low`` instead of ``high`` (decode speeds by rung when
    measured; else the spill figures; with neither, a small prior per halving)."""
    if model.memory and spill_share(model, high) == 0:
        return 0.0  # the larger context fits in VRAM too: no faster (speeds measured by rung are noise)
    slow = model.decode_spt.get(high)
    fast = model.decode_spt.get(low)
    if fast is None and slow is not None and spill_share(model, low) == 0 and spill_share(model, high) > 0:
        unspilled = [spt for ctx, spt in model.decode_spt.items() if spill_share(model, ctx) == 0]
        fast = min(unspilled, default=None)
    if fast is not None and slow is not None and slow > 0:
        return max(0.0, 1 - fast / slow)
    high_share, low_share = spill_share(model, high), spill_share(model, low)
    if high_share > low_share:
        return 1 - (1 + SPILL_SLOWDOWN_PRIOR * low_share) / (1 + SPILL_SLOWDOWN_PRIOR * high_share)
    if model.memory:
        return 0.0  # both fit in VRAM: no faster
    return SHRINK_PRIOR_GAIN * math.log2(high / low) if high > low else 0.0


# ---- rent -------------------------------------------------------------------------------------
def pay_rent(model: ModelState, rungs: list[int], needed: int, busy_s: float) -> None:
    """One request ran at the loaded rung and needed ``needed`` (a rung): every lower rung that would have
    held it earns what it would have saved; the rungs it would not fit restart from zero."""
    loaded = model.loaded_ctx
    for rung in rungs:
        if rung >= loaded:
            break
        if rung < needed:
            model.rent.pop(rung, None)
        else:
            model.rent[rung] = model.rent.get(rung, 0.0) + busy_s * saving_share(model, rung, loaded)


def pay_eviction(model: ModelState, rungs: list[int], reload_s: float, fits: int = 0) -> None:
    """Another model sharing the GPU was evicted and reloaded (``reload_s``): the rungs at which both fit
    (up to ``fits``; 0 = unknown: half this model's context or less) earn the reload as rent."""
    for rung in rungs:
        if rung >= model.loaded_ctx or rung > (fits or model.loaded_ctx // 2):
            break
        model.rent[rung] = model.rent.get(rung, 0.0) + reload_s


def shrink_target(
    model: ModelState,
    rungs: list[int],
    required_rung: int,
    active: int,
    reload_s: float,
    backoff: float,
    coming_s: float = 0.0,
) -> tuple[int, float]:
    """(rung, seconds paid) the model should return to now, or (0, 0).

    The rent-or-buy rule: once the extra time paid at the loaded rung since the last request that needed
    more than a lower rung exceeds a reload, return to it (at most 2x the best choice in hindsight). Below
    a claim still active the return costs two reloads (the claim will come back), and every revisit of the
    loaded context (a load back to it soon after leaving it) multiplies the threshold by ``backoff``
    (hysteresis: each shows its claim returning before the rent paid for the round trip); the strikes end
    with the claims on the context. ``coming_s`` is what the request being decided would take at the
    loaded rung: towards a rung that fits in VRAM its rent counts before it is paid (a request that alone
    would pay more than the return runs at the smaller rung), unless the loaded context was revisited.
    Of the rungs that qualify, the one saving the most per request, the largest of equals (the fewest growths back).
    """
    if not model.rent and (coming_s <= 0 or saving_share(model, required_rung, model.loaded_ctx) <= 0):
        return 0, 0.0  # nothing paid, and the smallest rung the request allows would save nothing
    best: tuple[float, int, float] = (0.0, 0, 0.0)
    if active < model.loaded_ctx:
        model.strikes.pop(model.loaded_ctx, None)
    strikes = model.strikes.get(model.loaded_ctx, 0)
    penalty = backoff**strikes
    if strikes:
        coming_s = 0.0  # a context already revisited is left only for rent actually paid
    for rung in rungs:
        if rung >= model.loaded_ctx:
            break
        if rung < required_rung:
            continue
        coming = coming_s * saving_share(model, rung, model.loaded_ctx) if spill_share(model, rung) == 0 else 0.0
        paid = model.rent.get(rung, 0.0) + coming
        if paid >= reload_s * (2 if active > rung else 1) * penalty:
            best = max(best, (round(saving_share(model, rung, model.loaded_ctx), 2), rung, paid))
    return best[1], best[2]


def note_move(model: ModelState, old: int, new: int, revisit_requests: int) -> bool:
    """Record a change of the loaded context; True when ``new`` was left within ``revisit_requests``."""
    left = model.left_at.get(new)
    revisit = left is not None and model.requests - left <= revisit_requests
    if revisit:
        model.strikes[new] = model.strikes.get(new, 0) + 1
        if len(model.strikes) > MEMORY_POINTS:
            del model.strikes[next(iter(model.strikes))]
    if old:
        model.left_at[old] = model.requests
        if len(model.left_at) > MEMORY_POINTS:
            del model.left_at[min(model.left_at, key=lambda c: model.left_at[c])]
    model.rent.clear()
    return revisit
