"""Prometheus domain metrics of the matcher (prefix optimizer_matcher_; bounded labels only)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

from ollama_optimizer.fingerprint_kernel import register_kernel_metric
from prompt_fingerprint import WINDOWS

_FAST_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00015,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)

MATCHES = Counter(
    "optimizer_matcher_matches_total",
    "Match answers by result (matched, partial = only below the template's stable window, miss, "
    "error = database unavailable) and matched window (64..1024, short, none).",
    ("result", "window"),
)
CACHE_REQUESTS = Counter(
    "optimizer_matcher_cache_requests_total", "Soft-cache lookups by result (hit, miss).", ("result",)
)
OBSERVES = Counter(
    "optimizer_matcher_observes_total", "Observe calls by result (created, folded, invalid, error).", ("result",)
)
WINDOW_CHANGES = Counter(
    "optimizer_matcher_window_changes_total",
    "Stable-window adaptations by direction (grow, shrink).",
    ("direction",),
)
register_kernel_metric()
TEMPLATES = Gauge("optimizer_matcher_templates", "Templates in the database (refreshed by the maintenance job).")
DB_ERRORS = Counter(
    "optimizer_matcher_db_errors_total",
    "Database errors and timeouts by operation (match, observe, admin, maintenance).",
    ("operation",),
)
RETENTION_DELETED = Counter(
    "optimizer_matcher_retention_deleted_total", "Stale low-count templates deleted by the retention job."
)
FINGERPRINT_SECONDS = Histogram(
    "optimizer_matcher_fingerprint_seconds", "Time to tokenize and fingerprint one text.", buckets=_FAST_BUCKETS
)
LOOKUP_SECONDS = Histogram(
    "optimizer_matcher_lookup_seconds",
    "Time of the block-index lookup (one SQL round trip).",
    buckets=_FAST_BUCKETS,
)


def window_label(window: int) -> str:
    """Bounded window label: a configured window, or "short" for a prompt shorter than all."""
    return str(window) if window in WINDOWS else "short"


@functools.lru_cache(maxsize=64)
def match_result(result: str, window: int = 0) -> Counter:
    """The MATCHES child for a result and window (0 = none), resolved once instead of per call."""
    return MATCHES.labels(result, window_label(window) if window else "none")
