"""Prometheus domain metrics of the tuner (bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ollama_optimizer.buckets import decades

RECOMMENDATIONS = Counter(  # model: at most MAX_MODEL_LABELS names, the rest "other"
    "optimizer_tuner_recommendations_total",
    "Recommendations (decisions) per model by action and reason code.",
    ("model", "action", "reason"),
)
OUTCOMES = Counter(  # result: accepted|duplicate|rejected|dropped
    "optimizer_tuner_outcomes_total", "Reported outcomes by result.", ("result",)
)
DECISIONS_UNVERIFIED = Counter(
    "optimizer_tuner_decisions_unverified_total",
    "Outcomes whose decision_id this tuner did not issue (forged, altered, another key, an older format): "
    "stored without the decision's fields.",
)
OUTCOMES_REJECTED = Counter(
    "optimizer_tuner_outcomes_rejected_total", "Rejected outcomes by validation rule.", ("rule",)
)
# What the optimizer changed against Ollama alone, per model (ollama_optimizer/benefit.py; the tuner's
# outcome order; at most MAX_MODEL_LABELS model names, the rest "other").
REQUESTS = Counter(
    "optimizer_tuner_requests_total",
    "Outcomes per model by action (apply = optimized | passthrough).",
    ("model", "action"),
)
TRUNCATIONS = Counter(
    "optimizer_tuner_truncations_total",
    "Per model: prevented = optimized requests not truncated whose prompt is longer than the context Ollama "
    "would have used; truncated = requests truncated anyway (the tuner's judgement).",
    ("model", "kind"),
)  # prevented|truncated
BASELINE_UNKNOWN = Counter(
    "optimizer_tuner_baseline_unknown_total",
    "Per model: optimized requests assessed before Ollama's default context was known (learned from /api/ps or "
    "set by TUNER_DEFAULT_NUM_CTX): whether Ollama would have cut them is unknown, so no truncation prevented "
    "is counted for them.",
    ("model",),
)
RUNNER_LOADS = Counter(
    "optimizer_tuner_runner_loads_total",
    "Runner loads (reloads) per model by cause: optimizer = an option change it made (no other model loaded on the "
    "host since); client = an option change of the client's own; other = first load, expiry or eviction.",
    ("model", "cause"),
)
BASELINE_RELOADS = Counter(
    "optimizer_tuner_baseline_reloads_total",
    "Per model: reloads the clients' own options would have caused without the optimizer (an option change "
    "between requests as the clients sent them).",
    ("model",),
)
PROMPT_SECONDS = Counter(
    "optimizer_tuner_prompt_seconds_total",
    "Prompt processing of optimized requests with an estimate, per model: measured, and baseline = estimated at "
    "the prompt speed Ollama showed with the clients' own options (same model and prompt size class).",
    ("model", "measure"),
)  # measured|baseline
KV_BYTES = Gauge(
    "optimizer_tuner_kv_bytes",
    "KV-cache bytes per model and Ollama host label of the context loaded now and of Ollama's default context "
    "(models whose KV bytes per token are known).",
    ("model", "ollama_host", "context"),
)  # loaded|default
CAPPED = Counter(
    "optimizer_tuner_capped_total",
    "APPLY decisions lowered by a hard limit (trained context, operator cap, KV budget) or the memory cap.",
)
OUTCOME_BUFFER = Gauge("optimizer_tuner_outcome_buffer", "Outcomes waiting to be written to Postgres.")
OUTCOMES_DROPPED = Counter(
    "optimizer_tuner_outcomes_dropped_total", "Outcomes dropped because the write-behind buffer was full."
)
OUTCOMES_WRITTEN = Counter("optimizer_tuner_outcomes_written_total", "Outcomes written to Postgres.")
DB_ERRORS = Counter("optimizer_tuner_db_errors_total", "Failed database operations.", ("op",))
FLUSH_SECONDS = Histogram(
    "optimizer_tuner_flush_seconds",
    "Duration of one write-behind flush.",
    buckets=decades(0.001, 5.0),
)
WRITER = Gauge("optimizer_tuner_writer", "1 when this process holds the single-writer lock, else 0 (standby).")
RUNAWAY_STOPPED = Counter(
    "optimizer_tuner_runaway_stopped_total",
    "Growths not made: truncation floors kept raising a model's context while the requests' own estimates did not.",
)
MODELS = Gauge("optimizer_tuner_models", "Models with learned state in memory.")
MODELS_BY_HOST = Gauge(
    "optimizer_tuner_models_by_host",
    "Models with learned state per Ollama host label ('' = the default host; beyond 32 labels: 'other').",
    ("ollama_host",),
)
TEMPLATES = Gauge("optimizer_tuner_templates", "(model, template) pairs with learned state in memory.")
REPORTS_REFUSED = Counter(
    "optimizer_tuner_reports_refused_total",
    "Report batches refused before validation (unknown_source | rate_limited); nothing was learned from them.",
    ("reason",),
)
