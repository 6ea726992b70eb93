"""Tuner settings (``TUNER_*``), declared once; ``load(TunerSettings, os.environ)`` reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ollama_optimizer.benefit import ReloadSettings
from ollama_optimizer.settings_env import check, same_as, setting

from .guard import GuardSettings
from .limits import LimitSettings


def _int_list(raw: str) -> tuple[int, ...]:
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError("must be positive integers separated by commas")
    return tuple(sorted({int(part) for part in parts}))


@dataclass(frozen=True)
class PolicySettings:
    """Knobs of the pure policy (no I/O)."""

    ladder_min: int = setting(1024, "TUNER_LADDER_MIN", "smallest rung of the num_ctx ladder", low=1, high=1 << 24)
    ladder_max: int = setting(
        262144, "TUNER_LADDER_MAX", "largest rung (a known model limit is the top rung)", low=1, high=1 << 24
    )
    ladder_steps: int = setting(
        4,
        "TUNER_LADDER_STEPS",
        "rungs per octave: 4 = 1024, 1280, 1536, 1792, 2048, ... (next rung at most 1.25x); 1 = powers of two",
        low=1,
        high=64,
    )
    ladder_rungs: tuple[int, ...] = setting(
        "", "TUNER_LADDER", "explicit comma-separated ladder instead of the generated rungs", parse=_int_list
    )
    default_num_ctx: int = setting(
        0,
        "TUNER_DEFAULT_NUM_CTX",
        "Ollama's default context until the gateway reports it from `/api/ps` (the server's "
        "`OLLAMA_CONTEXT_LENGTH`; set it for the smart-proxy agent); 0 = assumed by Ollama's rule from its "
        "version and VRAM to decide, but no figure is claimed against it (labelled assumed, `—` in `stats`)",
        low=0,
        high=1 << 24,
    )
    margin: float = setting(1.15, "TUNER_MARGIN", "margin on the need quantile", low=1, high=10)
    tight_margin: float = setting(
        1.0,
        "TUNER_TIGHT_MARGIN",
        "margin for models that must share memory (evicted by other models, or spilled to the CPU)",
        low=1,
        high=10,
    )
    eviction_min: int = setting(
        3,
        "TUNER_EVICTION_MIN",
        "loads of unchanged options (evictions) within `TUNER_EVICTION_WINDOW` requests that make a model tight",
        low=1,
        high=1 << 20,
    )
    eviction_window: int = setting(
        100, "TUNER_EVICTION_WINDOW", "requests the evictions are counted over", low=1, high=1 << 20
    )
    eviction_grace: int = setting(
        16,
        "TUNER_EVICTION_GRACE",
        "requests after an option change during which loads are not evictions (in-flight requests that still "
        "carry the previous options reload the runner back and forth under concurrency)",
        low=0,
        high=1 << 20,
    )
    spill_reload_fraction: float = setting(
        0.02,
        "TUNER_SPILL_RELOAD_FRACTION",
        "share of a model on the CPU from which a spill is fixed at once instead of at the next reload",
        low=0,
        high=1,
    )
    safe_num_batch: int = setting(
        512,
        "TUNER_SAFE_NUM_BATCH",
        "num_batch cap when no GPU memory figures bound it (Ollama's auto value grows the compute buffer)",
        low=1,
        high=1 << 20,
    )
    need_quantile: float = setting(
        0.99, "TUNER_NEED_QUANTILE", "quantile of tokens needed and of output length (output reserve)", low=0, high=1
    )
    calibration_quantile: float = setting(
        0.95,
        "TUNER_CALIBRATION_QUANTILE",
        "upper quantile of tokens per matcher unit (from the first measured sample: the largest of a few)",
        low=0,
        high=1,
    )
    units_ratio_prior: float = setting(
        1.5,
        "TUNER_UNITS_RATIO_PRIOR",
        "tokens per matcher unit before any sample; a claim on a context made from it (or from the output "
        "reserve) lasts only until the request's outcome shows what it needed",
        low=0.01,
        high=100,
    )
    calibration_min_samples: int = setting(
        5,
        "TUNER_CALIBRATION_MIN_SAMPLES",
        "samples before the lower quantile counts as truncation evidence",
        low=1,
        high=1 << 20,
    )
    chat_overhead_tokens: int = setting(
        8, "TUNER_CHAT_OVERHEAD_TOKENS", "chat-template tokens per message", low=0, high=1 << 16
    )
    output_reserve_tokens: int = setting(
        1024,
        "TUNER_OUTPUT_RESERVE_TOKENS",
        "output reserve without num_predict and without history",
        low=0,
        high=1 << 24,
    )
    min_observations: int = setting(
        3, "TUNER_MIN_OBSERVATIONS", "observations before a template is trusted", low=0, high=1 << 20
    )
    respect_client_options: bool = setting(
        True, "TUNER_RESPECT_CLIENT_OPTIONS", "pass through when the client set num_ctx/num_batch"
    )
    truncation_guard: bool = setting(
        True, "TUNER_TRUNCATION_GUARD", "oversize prompts get a larger num_ctx without history"
    )
    truncation_fraction: float = setting(
        0.7,
        "TUNER_TRUNCATION_FRACTION",
        "prompt_eval_count below this fraction of the estimate means truncated",
        low=0,
        high=1,
    )
    claim_idle_seconds: float = setting(
        300.0,
        "TUNER_CLAIM_IDLE_SECONDS",
        "a request's claim on a context ends this long (by the finish times of outcomes) after the last request "
        "that needed it: a session that stops sending stops holding the context",
        low=0,
        high=1e9,
    )
    keep_alive_seconds: float = setting(
        300.0,
        "TUNER_KEEP_ALIVE_SECONDS",
        "the Ollama host's `OLLAMA_KEEP_ALIVE`: a model idle longer was unloaded (its next load is an expiry, not "
        "an eviction) and takes no room beside the models in use",
        low=0,
        high=1e9,
    )
    grow_headroom: float = setting(
        2.0,
        "TUNER_GROW_HEADROOM",
        "growth covers up to this multiple of the request's need while the model still fits the GPU there",
        low=1,
        high=100,
    )
    max_growth: float = setting(
        2.0,
        "TUNER_MAX_GROWTH",
        "growth driven by a learned floor (not by the request's own estimate) is bounded to this factor of the "
        "loaded context per decision",
        low=1,
        high=100,
    )
    revisit_requests: int = setting(
        10,
        "TUNER_REVISIT_REQUESTS",
        "a load back to a context left within this many requests is a revisit: it raises the shrink threshold",
        low=0,
        high=1 << 20,
    )
    revisit_backoff: float = setting(
        2.0,
        "TUNER_REVISIT_BACKOFF",
        "each recent revisit multiplies the reload cost a return must have paid for (hysteresis)",
        low=1,
        high=100,
    )
    reload_cost_prior_seconds: float = setting(
        5.0, "TUNER_RELOAD_COST_PRIOR_SECONDS", "reload cost before one is measured", low=0, high=3600
    )
    num_batch_arms: tuple[int, ...] = setting(
        "256,512,1024,2048", "TUNER_NUM_BATCH_ARMS", "num_batch bandit arms", parse=_int_list
    )
    reload_threshold_seconds: float = same_as(ReloadSettings, "reload_threshold_seconds")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class TunerSettings:
    """Service settings: policy plus write-behind, retention and locking."""

    policy: PolicySettings = field(default_factory=PolicySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    buffer_max: int = setting(
        100_000, "TUNER_BUFFER_MAX", "outcome buffer while Postgres is unreachable (drops counted)", low=1, high=1 << 28
    )
    flush_interval_seconds: float = setting(
        0.5, "TUNER_FLUSH_INTERVAL_SECONDS", "write-behind cadence", low=0.001, high=3600
    )
    flush_batch: int = setting(5000, "TUNER_FLUSH_BATCH", "outcomes per write-behind batch", low=1, high=1 << 24)
    max_report_batch: int = setting(10_000, "TUNER_MAX_REPORT_BATCH", "outcomes per Report call", low=1, high=1 << 24)
    retention_days: float = setting(30.0, "TUNER_OUTCOME_RETENTION_DAYS", "outcome retention", low=0.001, high=1e6)
    lock_retry_seconds: float = setting(
        0.25,
        "TUNER_LOCK_RETRY_SECONDS",
        "how often a standby tuner tries to take the single-writer lock (a freed lock is taken within this long)",
        low=0.001,
        high=3600,
    )
    lock_session_timeout_seconds: float = setting(
        5.0,
        "TUNER_LOCK_SESSION_TIMEOUT_SECONDS",
        "Postgres ends the writer's lock session, freeing the lock for a standby, once the writer has been silent "
        "this long (hung, stopped, cut off): `idle_session_timeout`, `idle_in_transaction_session_timeout` and "
        "`tcp_user_timeout` on that one session (never below 4 flush intervals; 0 = off). `idle_session_timeout` "
        "needs Postgres 14",
        low=0,
        high=86400,
    )
    report_sync_seconds: float = setting(
        1.0,
        "TUNER_REPORT_SYNC_SECONDS",
        "Report answers once its outcomes are stored (bounded wait): a tuner killed after answering loses nothing "
        "it acknowledged while Postgres was up; 0 = answer at once (write-behind only)",
        low=0,
        high=3600,
    )
    dedupe_window: int = setting(
        200_000, "TUNER_DEDUPE_WINDOW", "outcome ids remembered for duplicate detection", low=0, high=1 << 28
    )
    templates_in_memory: int = setting(
        100_000,
        "TUNER_TEMPLATES_IN_MEMORY",
        "templates kept in memory per model (least recently used leave; fetched again on use)",
        low=1,
        high=1 << 28,
    )
    decision_key: str = setting(
        "",
        "TUNER_DECISION_KEY",
        "HMAC key signing decision ids; set the same secret on every tuner so ids survive restarts and failover "
        "(unsigned, altered or foreign ids count as no decision); also read from the file `TUNER_DECISION_KEY_FILE` "
        "names",
        secret=True,
        shown_default="*(random per process)*",
    )

    def __post_init__(self) -> None:
        check(self)
