"""In-memory learning state: per model and per (model, template). Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sketch import LogHistogram


@dataclass
class ArmStats:
    """Running mean of the reward (prompt tokens/s) of one num_batch value in one size class."""

    pulls: int = 0
    mean: float = 0.0

    def add(self, reward: float, horizon: int = 200) -> None:
        self.pulls += 1
        self.mean += (reward - self.mean) / min(self.pulls, horizon)


@dataclass
class TemplateState:
    """What one template needs on one model, and what an operator fixed for it."""

    need: LogHistogram = field(default_factory=LogHistogram)  # prompt + output tokens
    output: LogHistogram = field(default_factory=LogHistogram)  # eval_count
    observations: int = 0
    successes: int = 0
    truncations: int = 0
    last_safe_ctx: int = 0  # largest context seen to work without truncation (latest)
    floor_ctx: int = 0  # raised at once by a truncation signal
    current_ctx: int = 0  # what the template last got
    current_batch: int = 0
    pinned: bool = False
    pin_ctx: int = 0
    pin_batch: int = 0
    last_seen: int = 0  # the model's request counter when last seen
    cached_need: float = -1.0  # template_need() memo; -1 = stale


@dataclass
class ModelState:
    """One Ollama model: calibration, believed runner options, reload cost, speeds, templates."""

    ratio: LogHistogram = field(default_factory=LogHistogram)  # prompt tokens per matcher unit
    calibration_samples: int = 0
    managed: bool = False  # the tuner applies explicit options to this model
    loaded_ctx: int = 0  # believed loaded num_ctx (0 = Ollama's default)
    loaded_batch: int = 0  # believed loaded num_batch (0 = Ollama's default)
    default_ctx: int = 0  # observed default context (0 = unknown: settings apply)
    context_limit: int = 0  # 0 = unknown
    reload_cost_s: float = 0.0  # EWMA of load_duration on reloads (0 = unknown)
    reloads: int = 0
    requests: int = 0
    request_s: float = 0.0  # EWMA of (total - load) seconds per request
    gpu_free: int = 0  # bytes of GPU memory free, last reported (0 = unknown)
    gpu_total: int = 0
    size_bytes: int = 0  # /api/ps size and size_vram of the loaded model, last reported (0 = unknown)
    vram_bytes: int = 0
    config_loads: int = 0  # loads seen of the options the model is believed loaded with
    config_since: int = 0  # the request counter when those options were chosen
    evictions: list[int] = field(default_factory=list)  # request counters of recent evictions (bounded)
    tight: str = ""  # why the tightest rung (tight margin) is preferred; "" = normal margin
    tight_floor: int = 0  # largest request need seen while tight: co-residence moves stay above it
    batch_cap: int = 0  # largest num_batch allowed after a spill (0 = no cap)
    spilled: tuple[int, int] = (0, 0)  # (num_ctx, num_batch) last seen partly offloaded to the CPU
    relieve: tuple[str, str] = ("", "")  # pending (reason code, reason) to reload at once: spill, co-residence
    arms: dict[tuple[int, int], ArmStats] = field(default_factory=dict)  # (size class, num_batch)
    class_tokens: dict[int, float] = field(default_factory=dict)  # prompt tokens per size class
    seconds_per_token: dict[int, float] = field(default_factory=dict)  # by num_ctx
    decode_spt: dict[int, float] = field(default_factory=dict)  # EWMA decode seconds per token, by num_ctx
    claims: dict[int, float] = field(default_factory=dict)  # rung -> policy clock when a request last needed it
    tentative: dict[tuple[int, int, int], tuple[int, float]] = field(default_factory=dict)  # request shape ->
    # (rung, policy clock) claimed from a prior-based estimate until its outcome arrives (tentative.py)
    rent: dict[int, float] = field(default_factory=dict)  # rung -> seconds paid at the loaded rung since a
    # request last needed more than that rung (what shrinking to it would have saved)
    left_at: dict[int, int] = field(default_factory=dict)  # context -> request counter when the model left it
    strikes: dict[int, int] = field(default_factory=dict)  # context -> loads back to it soon after leaving it
    memory: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # (num_ctx, num_batch) ->
    # /api/ps (size, size_vram) last seen with those options (bounded)
    floor_growths: list[int] = field(default_factory=list)  # request counters of growths a floor drove
    runaway: str = ""  # why growth driven by truncation floors is stopped ("" = it is not)
    used_at: float = 0.0  # finish time of the latest outcome (seconds, the policy's clock)
    loaded_at: dict[int, float] = field(default_factory=dict)  # context -> when a load of it last finished
    displaced: bool = False  # another model's load evicted it (coreside.py): its next request loads it anyway
    load_config: tuple[int, int] = (-1, -1)  # options of the last outcome (reload detection without the gateway)
    templates: dict[int, TemplateState] = field(default_factory=dict)
    count_semantics: str = "unknown"  # how this model's host counts prompt tokens (evidence.py)
    ollama_version: str = ""  # the version this model's outcomes last reported ("" = none)
    version_at: float = 0.0  # when (the outcome's finish time)
    evidence_note: str = ""  # the last telemetry not taken at face value, and why
    foreign_truncations: int = 0  # truncations seen at a context other than the believed one (not escalated)
    kv_bytes_per_token: int = 0  # from /api/show via the gateway (0 = unknown)
    num_ctx_cap: int = 0  # hard cap from limits.py (trained context, operator caps, KV budget); 0 = none
    # An outcome, a pin or the database vouched for this model. Until then it exists only in memory (a
    # Recommend for a name Ollama may not know must not leave a row behind) and counts against the
    # policy's bound on unconfirmed models.
    confirmed: bool = False


def ladder(ladder_min: int, ladder_max: int, limit: int, steps: int = 1, explicit: tuple[int, ...] = ()) -> list[int]:
    """Rungs from ladder_min up to the cap; the cap (max or model limit) is always the top rung.

    ``steps`` rungs per octave: 2^k x (1 + i/steps), i < steps (1 = powers of two; 4 = at most 1.25x
    from one rung to the next). ``explicit`` replaces the generated rungs (still capped).
    """
    cap = max(min(ladder_max, limit) if limit > 0 else ladder_max, 1)
    if explicit:
        return sorted({r for r in explicit if 0 < r < cap} | {cap})
    steps = max(1, steps)
    rungs: list[int] = []
    octave = ladder_min
    while octave < cap:
        for i in range(steps):
            rung = octave + octave * i // steps
            if rung >= cap:
                break
            rungs.append(rung)
        octave *= 2
    rungs.append(cap)
    return rungs


def rung_for(tokens: float, rungs: list[int]) -> int:
    """The smallest rung covering ``tokens`` (the top rung when nothing does)."""
    for rung in rungs:
        if rung >= tokens:
            return rung
    return rungs[-1]


def size_class(prompt_tokens: float) -> int:
    """Prompt-size class for the num_batch bandit: <512, <2048, <8192, larger."""
    for index, bound in enumerate((512, 2048, 8192)):
        if prompt_tokens < bound:
            return index
    return 3
