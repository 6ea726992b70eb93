"""Hard limits and caps on num_ctx, applied as the last step of every decision.

Hard limits (never exceeded, even when a request then gets truncated, and explain says so): the model's
trained context (/api/show), the operator's global and per-model maximum num_ctx, and the per-model
KV-memory budget. The memory cap from GPU figures (the loaded model's size against the GPU's total)
is soft: it bounds the context a load picks, never below what the request needs with the policy's margin,
and never forces a load of its own (leaving a loaded context that spills is the rent-or-buy rule's choice).
"""

from __future__ import annotations

from dataclasses import dataclass

from ollama_optimizer.settings_env import check, setting

from .hosts import split_key
from .state import ModelState, rung_for


def per_model(raw: str) -> dict[str, int]:
    """``model=value,model=value`` -> {model: value}; a malformed entry is a start-up error."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        model, sep, value = part.rpartition("=")
        if not sep or not model or not value.strip().isdigit():
            raise ValueError(f"expected model=integer entries, got {part!r}")
        out[model.strip()] = int(value)
    return out


@dataclass(frozen=True)
class LimitSettings:
    """Operator caps (0 = none). Per-model entries are keyed by model name."""

    max_num_ctx: int = setting(
        0, "TUNER_MAX_NUM_CTX", "hard cap on num_ctx for every model (0 = none)", low=0, high=1 << 24
    )
    model_max_num_ctx: dict[str, int] = setting(
        "", "TUNER_MODEL_MAX_NUM_CTX", "per-model hard caps, `model=value,model=value`", parse=per_model
    )
    kv_budget_bytes: int = setting(
        0,
        "TUNER_KV_BUDGET_BYTES",
        "KV-cache memory budget of every model (0 = none); with the KV size per token from `/api/show` it caps num_ctx",
        low=0,
        high=1 << 50,
    )
    model_kv_budget_bytes: dict[str, int] = setting(
        "", "TUNER_MODEL_KV_BUDGET_BYTES", "per-model KV-cache budgets, `model=bytes,...`", parse=per_model
    )
    gpu_share: float = setting(
        0.9,
        "TUNER_GPU_SHARE",
        "with GPU figures, the share of the GPU's memory one model may fill (weights + KV): a cap that never goes "
        "below a request's need",
        low=0.01,
        high=1,
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Cap:
    """The largest num_ctx allowed and why (0 = no cap)."""

    value: int = 0
    why: str = ""

    def tighter(self, value: int, why: str) -> Cap:
        return Cap(value, why) if value > 0 and (self.value == 0 or value < self.value) else self


def learn(model: ModelState, context_limit: int, kv_bytes_per_token: int) -> None:
    """Take the trained context and KV size per token the gateway read from /api/show."""
    if context_limit > 0:
        model.context_limit = context_limit
    if kv_bytes_per_token > 0:
        model.kv_bytes_per_token = kv_bytes_per_token


def hard_cap(name: str, model: ModelState, s: LimitSettings) -> Cap:
    """Trained context, operator maxima and the KV budget: the tightest one."""
    base = split_key(name)[0]
    cap = Cap().tighter(model.context_limit, f"trained context {model.context_limit}")
    cap = cap.tighter(s.max_num_ctx, f"TUNER_MAX_NUM_CTX {s.max_num_ctx}")
    per_model = s.model_max_num_ctx.get(base, 0)
    cap = cap.tighter(per_model, f"TUNER_MODEL_MAX_NUM_CTX {base}={per_model}")
    budget = s.model_kv_budget_bytes.get(base, 0) or s.kv_budget_bytes
    if budget and model.kv_bytes_per_token:
        tokens = budget // model.kv_bytes_per_token
        cap = cap.tighter(
            max(tokens, 1),
            f"KV budget {budget / 2**30:.2f} GiB = {tokens} tokens at {model.kv_bytes_per_token} B/token",
        )
    return cap


def memory_cap(model: ModelState, s: LimitSettings) -> Cap:
    """From the loaded model's size at its context (/api/ps) and what the GPU holds: the GPU's total memory
    (host probes) times ``gpu_share``, else, once the model spilled to the CPU, its part in VRAM."""
    bpt, ctx = model.kv_bytes_per_token, model.loaded_ctx or model.default_ctx
    if model.gpu_total:
        capacity, what = int(model.gpu_total * s.gpu_share), f"GPU {model.gpu_total / 2**30:.1f} GiB x {s.gpu_share:g}"
    elif 0 < model.vram_bytes < model.size_bytes:
        capacity, what = model.vram_bytes, f"{model.vram_bytes / 2**30:.1f} GiB in VRAM before the spill"
    else:
        return Cap()
    if not (model.size_bytes and bpt and ctx):
        return Cap()
    fixed = model.size_bytes - bpt * ctx  # weights and buffers: what the size holds beyond the KV cache
    tokens = max((capacity - max(fixed, 0)) // bpt, 0)
    return Cap(tokens, f"{what} holds {tokens} tokens of KV beside the weights") if tokens else Cap()


def clamp(
    name: str,
    model: ModelState | None,
    num_ctx: int,
    need: int,
    rungs: list[int],
    s: LimitSettings,
    margin: float = 1.0,
    load: bool = True,
) -> tuple[int, str]:
    """``num_ctx`` within the caps; returns (value, reason to append; "" when no cap binds).

    A hard cap always wins, and the reason says so whenever it binds (the request may then be
    truncated); the memory cap binds only a ``load`` (a decision that keeps the loaded context is left
    alone: lowering it would be a reload the policy did not choose) and never goes below the rung that
    covers ``need`` x ``margin``.
    """
    if model is None or num_ctx <= 0:
        return num_ctx, ""
    hard = hard_cap(name, model, s)
    value, why = num_ctx, ""
    soft = memory_cap(model, s) if load else Cap()
    if soft.value and value > soft.value:
        floor = rung_for(need * margin, rungs) if need else 0
        fitting = max([r for r in rungs if r <= soft.value], default=0)
        target = max(fitting, floor)
        if target < value:
            value, why = (
                target,
                f"memory cap: {soft.why}" + (f"; kept {target} for need {need}" if target > soft.value else ""),
            )
    if hard.value and value >= hard.value and (value > hard.value or need > value):
        value = hard.value
        why = f"capped at {value} ({hard.why})"
        if need > value:
            why += f"; this request needs {need}: it may be truncated"
    return value, why
