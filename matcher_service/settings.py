"""Matcher settings (``MATCHER_*``), declared once; ``load(MatcherSettings, os.environ)`` reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ollama_optimizer.settings_env import check, setting
from prompt_fingerprint import WINDOWS

MAX_THRESHOLD = 11  # blocks.radii: sum(r_i + 1) = k + 1, so at most 2-bit variants per block (548 probes)
DEFAULT_THRESHOLDS = "16:2,32:3,64:3,128:4,256:5,512:6,1024:7"
DEFAULT_NEAR_BITS = 16
OPTIONAL_WINDOWS = (16, 32)
_DEFAULTS = {int(w): int(k) for w, k in (part.split(":") for part in DEFAULT_THRESHOLDS.split(","))}


def parse_thresholds(spec: str) -> dict[int, int]:
    """Parse ``"64:3,128:4,..."``: each window's k in 0..MAX_THRESHOLD; the small windows (16, 32) keep
    their defaults when left out, so a specification written for windows 64..1024 stays valid."""
    result: dict[int, int] = {}
    for part in spec.split(","):
        window, sep, k = part.strip().partition(":")
        if not sep or not window.isdigit() or not k.isdigit():
            raise ValueError(f"bad entry {part!r} (want WINDOW:K)")
        if int(window) not in WINDOWS:
            raise ValueError(f"window {window} is not one of {WINDOWS}")
        if int(k) > MAX_THRESHOLD:
            raise ValueError(f"k={k} above {MAX_THRESHOLD}")
        result[int(window)] = int(k)
    for optional in OPTIONAL_WINDOWS:
        result.setdefault(optional, _DEFAULTS[optional])
    missing = set(WINDOWS) - set(result)
    if missing:
        raise ValueError(f"no threshold for windows {sorted(missing)}")
    return result


@dataclass(frozen=True)
class MatcherSettings:
    shingle_size: int = setting(
        4, "MATCHER_SHINGLE_SIZE", "tokens per shingle; part of the algorithm version", low=3, high=5
    )
    normalize: bool = setting(
        True,
        "MATCHER_NORMALIZE",
        "replace volatile literals (numbers, hex ids, UUID/date parts) by one placeholder; "
        "part of the algorithm version",
    )
    thresholds: dict[int, int] = setting(
        DEFAULT_THRESHOLDS,
        "MATCHER_THRESHOLDS",
        f"max Hamming distance k(W) per window (0-{MAX_THRESHOLD}); a window left out keeps its default; "
        "prompts shorter than 16 tokens use k(16)",
        parse=parse_thresholds,
    )
    max_text_bytes: int = setting(
        1 << 20,
        "MATCHER_MAX_TEXT_BYTES",
        "largest accepted text (UTF-8 bytes); larger: INVALID_ARGUMENT (gRPC's receive limit is this plus 1 MiB, "
        "at least 4 MiB)",
        low=1,
        high=64 << 20,
    )
    match_db_timeout: float = setting(
        0.25,
        "MATCHER_MATCH_DB_TIMEOUT_SECONDS",
        "database budget of one Match, shortened to 80% of the caller's remaining deadline; on timeout/outage "
        'Match answers "not matched"',
        low=0.001,
        high=60,
    )
    cache_size: int = setting(
        10_000, "MATCHER_CACHE_SIZE", "entries of the in-memory soft cache (0 disables it)", low=0, high=10_000_000
    )
    cache_ttl: float = setting(2.0, "MATCHER_CACHE_TTL_SECONDS", "lifetime of a cache entry", low=0, high=3600)
    grow_after: int = setting(
        30,
        "MATCHER_GROW_AFTER",
        "consecutive matches at a larger window before the stable window grows",
        low=20,
        high=50,
    )
    shrink_after: int = setting(
        1,
        "MATCHER_SHRINK_AFTER",
        "consecutive near partial matches (a smaller window only) before the stable window shrinks",
        low=1,
        high=10,
    )
    near_bits: int = setting(
        DEFAULT_NEAR_BITS,
        "MATCHER_NEAR_BITS",
        "a partial match (below the stable window) is shrink evidence only within this many bits at the stable "
        "window (unrelated text differs in ~32), else a sibling template",
        low=0,
        high=32,
    )
    retention_min_observations: int = setting(
        3,
        "MATCHER_RETENTION_MIN_OBSERVATIONS",
        "templates with fewer observations, and none for `MATCHER_RETENTION_MAX_IDLE_SECONDS`, are deleted",
        low=0,
        high=1 << 31,
    )
    retention_max_idle: float = setting(
        7 * 86400.0,
        "MATCHER_RETENTION_MAX_IDLE_SECONDS",
        "idle time after which a template with few observations is deleted",
        low=1,
        high=1e10,
    )
    retention_forget: float = setting(
        90 * 86400.0,
        "MATCHER_RETENTION_FORGET_SECONDS",
        "any template with no observation for this long (never less than the above) is deleted",
        low=1,
        high=1e10,
    )
    maintenance_interval: float = setting(
        60.0,
        "MATCHER_MAINTENANCE_INTERVAL_SECONDS",
        "period of the retention job and the templates gauge refresh",
        low=0.01,
        high=86400,
    )

    def __post_init__(self) -> None:
        check(self)

    def threshold(self, window: int) -> int:
        """k(W); a prompt shorter than the smallest window uses the smallest window's k."""
        return self.thresholds.get(window, self.thresholds[WINDOWS[0]])
