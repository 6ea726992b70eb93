"""Tuner settings from TUNER_* environment variables (defaults documented in the README table)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ollama_optimizer.config import env_bool, env_float, env_int, env_str

from .limits import LimitSettings


def _int_list(raw: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))


@dataclass(frozen=True)
class PolicySettings:
    """Knobs of the pure policy (no I/O)."""

    ladder_min: int = field(default_factory=lambda: env_int("TUNER_LADDER_MIN", 1024))
    ladder_max: int = field(default_factory=lambda: env_int("TUNER_LADDER_MAX", 262144))
    # Rungs per octave: 4 = 1024, 1280, 1536, 1792, 2048, ... (next rung at most 1.25x). TUNER_LADDER (a list)
    # replaces the generated rungs.
    ladder_steps: int = field(default_factory=lambda: env_int("TUNER_LADDER_STEPS", 4))
    ladder_rungs: tuple[int, ...] = field(default_factory=lambda: _int_list(env_str("TUNER_LADDER", "")))
    default_num_ctx: int = field(default_factory=lambda: env_int("TUNER_DEFAULT_NUM_CTX", 4096))
    margin: float = field(default_factory=lambda: env_float("TUNER_MARGIN", 1.15))
    # Margin for models that must share memory (evicted by other models, or spilled to the CPU).
    tight_margin: float = field(default_factory=lambda: env_float("TUNER_TIGHT_MARGIN", 1.0))
    # Loads of unchanged options (evictions) within eviction_window requests that make a model "tight".
    eviction_min: int = field(default_factory=lambda: env_int("TUNER_EVICTION_MIN", 3))
    eviction_window: int = field(default_factory=lambda: env_int("TUNER_EVICTION_WINDOW", 100))
    # Requests after an option change during which loads are not evictions (in-flight requests that
    # still carry the previous options reload the runner back and forth under concurrency).
    eviction_grace: int = field(default_factory=lambda: env_int("TUNER_EVICTION_GRACE", 16))
    # Share of the model on the CPU from which a spill is fixed at once instead of at the next reload.
    spill_reload_fraction: float = field(default_factory=lambda: env_float("TUNER_SPILL_RELOAD_FRACTION", 0.02))
    # num_batch when no GPU memory figures bound it (Ollama's auto value grows the compute buffer).
    safe_num_batch: int = field(default_factory=lambda: env_int("TUNER_SAFE_NUM_BATCH", 512))
    need_quantile: float = field(default_factory=lambda: env_float("TUNER_NEED_QUANTILE", 0.99))
    calibration_quantile: float = field(default_factory=lambda: env_float("TUNER_CALIBRATION_QUANTILE", 0.95))
    units_ratio_prior: float = field(default_factory=lambda: env_float("TUNER_UNITS_RATIO_PRIOR", 1.5))
    calibration_min_samples: int = field(default_factory=lambda: env_int("TUNER_CALIBRATION_MIN_SAMPLES", 5))
    chat_overhead_tokens: int = field(default_factory=lambda: env_int("TUNER_CHAT_OVERHEAD_TOKENS", 8))
    output_reserve_tokens: int = field(default_factory=lambda: env_int("TUNER_OUTPUT_RESERVE_TOKENS", 1024))
    min_observations: int = field(default_factory=lambda: env_int("TUNER_MIN_OBSERVATIONS", 3))
    respect_client_options: bool = field(default_factory=lambda: env_bool("TUNER_RESPECT_CLIENT_OPTIONS", True))
    truncation_guard: bool = field(default_factory=lambda: env_bool("TUNER_TRUNCATION_GUARD", True))
    truncation_fraction: float = field(default_factory=lambda: env_float("TUNER_TRUNCATION_FRACTION", 0.7))
    # A request's claim on a context ends this long (seconds, by the finish times of outcomes) after the
    # last request that needed it: a session that stops sending stops holding the context.
    claim_idle_seconds: float = field(default_factory=lambda: env_float("TUNER_CLAIM_IDLE_SECONDS", 300.0))
    # The Ollama host's OLLAMA_KEEP_ALIVE: a model idle longer has been unloaded (its next load is an expiry,
    # not an eviction) and takes no room beside the models in use.
    keep_alive_seconds: float = field(default_factory=lambda: env_float("TUNER_KEEP_ALIVE_SECONDS", 300.0))
    # Growth covers up to this multiple of the request's need while the model still fits the GPU there.
    grow_headroom: float = field(default_factory=lambda: env_float("TUNER_GROW_HEADROOM", 2.0))
    # Growth driven by a learned floor (not by the request's own estimate) is bounded to this factor per decision.
    max_growth: float = field(default_factory=lambda: env_float("TUNER_MAX_GROWTH", 2.0))
    # A load back to a context left within this many requests is a revisit: it raises the shrink threshold.
    revisit_requests: int = field(default_factory=lambda: env_int("TUNER_REVISIT_REQUESTS", 10))
    # Each recent revisit multiplies the reload cost a return must have paid for (hysteresis).
    revisit_backoff: float = field(default_factory=lambda: env_float("TUNER_REVISIT_BACKOFF", 2.0))
    reload_cost_prior_seconds: float = field(default_factory=lambda: env_float("TUNER_RELOAD_COST_PRIOR_SECONDS", 5.0))
    num_batch_arms: tuple[int, ...] = field(
        default_factory=lambda: _int_list(env_str("TUNER_NUM_BATCH_ARMS", "256,512,1024,2048"))
    )


@dataclass(frozen=True)
class TunerSettings:
    """Service settings: policy plus write-behind, retention and locking."""

    policy: PolicySettings = field(default_factory=PolicySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    buffer_max: int = field(default_factory=lambda: env_int("TUNER_BUFFER_MAX", 100_000))
    flush_interval_seconds: float = field(default_factory=lambda: env_float("TUNER_FLUSH_INTERVAL_SECONDS", 0.5))
    flush_batch: int = field(default_factory=lambda: env_int("TUNER_FLUSH_BATCH", 5000))
    max_report_batch: int = field(default_factory=lambda: env_int("TUNER_MAX_REPORT_BATCH", 10_000))
    retention_days: float = field(default_factory=lambda: env_float("TUNER_OUTCOME_RETENTION_DAYS", 30.0))
    # How often a standby tries to take the single-writer lock (a free lock is taken within this long).
    lock_retry_seconds: float = field(default_factory=lambda: env_float("TUNER_LOCK_RETRY_SECONDS", 0.25))
    # Postgres ends the writer's lock session (and frees the lock for a standby) once the writer is silent
    # this long: hung, stopped, or cut off. Never below four flush intervals (the writer's own heartbeat);
    # 0 = never (a hung writer then keeps the lock until its connection dies).
    lock_session_timeout_seconds: float = field(
        default_factory=lambda: env_float("TUNER_LOCK_SESSION_TIMEOUT_SECONDS", 5.0)
    )
    # Report answers once its outcomes are stored (bounded wait): a tuner killed after answering loses
    # nothing it acknowledged while Postgres was up. 0 = answer at once (write-behind only).
    report_sync_seconds: float = field(default_factory=lambda: env_float("TUNER_REPORT_SYNC_SECONDS", 1.0))
    dedupe_window: int = field(default_factory=lambda: env_int("TUNER_DEDUPE_WINDOW", 200_000))
    # Templates kept in memory per model (least recently used beyond it are dropped; loaded again on demand).
    templates_in_memory: int = field(default_factory=lambda: env_int("TUNER_TEMPLATES_IN_MEMORY", 100_000))
