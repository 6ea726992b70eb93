"""Matcher settings from environment variables (read once at start-up).

| variable | default | meaning |
|---|---|---|
| `MATCHER_SHINGLE_SIZE` | `4` | tokens per shingle (3-5); part of the algorithm version |
| `MATCHER_NORMALIZE` | `true` | replace volatile literals (numbers, hex ids, UUID/date parts) by one placeholder; part of the algorithm version |
| `MATCHER_THRESHOLDS` | `16:2,32:3,64:3,128:4,256:5,512:6,1024:7` | max Hamming distance k(W) per window (0-11); a window left out keeps its default; prompts shorter than 16 tokens use k(16) |
| `MATCHER_MAX_TEXT_BYTES` | `1048576` | largest accepted text (UTF-8 bytes); larger → INVALID_ARGUMENT (gRPC's receive limit is this plus 1 MiB, at least 4 MiB) |
| `MATCHER_MATCH_DB_TIMEOUT_SECONDS` | `0.25` | database budget of one Match, shortened to 80% of the caller's remaining deadline; on timeout/outage Match answers "not matched" |
| `MATCHER_CACHE_SIZE` | `10000` | entries of the in-memory soft cache (0 disables it) |
| `MATCHER_CACHE_TTL_SECONDS` | `2.0` | lifetime of a cache entry |
| `MATCHER_GROW_AFTER` | `30` | consecutive matches at a larger window before the stable window grows (20-50) |
| `MATCHER_SHRINK_AFTER` | `1` | consecutive near partial matches (a smaller window only) before the stable window shrinks (1-10) |
| `MATCHER_NEAR_BITS` | `16` | a partial match (below the stable window) is shrink evidence only within this many bits at the stable window (0-32; unrelated text differs in ~32), else a sibling template |
| `MATCHER_RETENTION_MIN_OBSERVATIONS` | `3` | templates with fewer observations ... |
| `MATCHER_RETENTION_MAX_IDLE_SECONDS` | `604800` | ... and no observation for this long are deleted |
| `MATCHER_RETENTION_FORGET_SECONDS` | `7776000` | any template with no observation for this long (90 days; never less than the above) is deleted |
| `MATCHER_MAINTENANCE_INTERVAL_SECONDS` | `60` | period of the retention job and the templates gauge refresh |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ollama_optimizer.config import env_bool, env_float, env_int, env_str
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
            raise ValueError(f"MATCHER_THRESHOLDS: bad entry {part!r} (want WINDOW:K)")
        if int(window) not in WINDOWS:
            raise ValueError(f"MATCHER_THRESHOLDS: window {window} is not one of {WINDOWS}")
        if int(k) > MAX_THRESHOLD:
            raise ValueError(f"MATCHER_THRESHOLDS: k={k} above {MAX_THRESHOLD}")
        result[int(window)] = int(k)
    for optional in OPTIONAL_WINDOWS:
        result.setdefault(optional, _DEFAULTS[optional])
    missing = set(WINDOWS) - set(result)
    if missing:
        raise ValueError(f"MATCHER_THRESHOLDS: no threshold for windows {sorted(missing)}")
    return result


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


@dataclass(frozen=True)
class MatcherSettings:
    shingle_size: int = field(default_factory=lambda: env_int("MATCHER_SHINGLE_SIZE", 4))
    normalize: bool = field(default_factory=lambda: env_bool("MATCHER_NORMALIZE", True))
    thresholds: dict[int, int] = field(
        default_factory=lambda: parse_thresholds(env_str("MATCHER_THRESHOLDS", DEFAULT_THRESHOLDS))
    )
    max_text_bytes: int = field(default_factory=lambda: env_int("MATCHER_MAX_TEXT_BYTES", 1 << 20))
    match_db_timeout: float = field(default_factory=lambda: env_float("MATCHER_MATCH_DB_TIMEOUT_SECONDS", 0.25))
    cache_size: int = field(default_factory=lambda: env_int("MATCHER_CACHE_SIZE", 10_000))
    cache_ttl: float = field(default_factory=lambda: env_float("MATCHER_CACHE_TTL_SECONDS", 2.0))
    grow_after: int = field(default_factory=lambda: env_int("MATCHER_GROW_AFTER", 30))
    shrink_after: int = field(default_factory=lambda: env_int("MATCHER_SHRINK_AFTER", 1))
    near_bits: int = field(default_factory=lambda: env_int("MATCHER_NEAR_BITS", DEFAULT_NEAR_BITS))
    retention_min_observations: int = field(default_factory=lambda: env_int("MATCHER_RETENTION_MIN_OBSERVATIONS", 3))
    retention_max_idle: float = field(
        default_factory=lambda: env_float("MATCHER_RETENTION_MAX_IDLE_SECONDS", 7 * 86400.0)
    )
    retention_forget: float = field(default_factory=lambda: env_float("MATCHER_RETENTION_FORGET_SECONDS", 90 * 86400.0))
    maintenance_interval: float = field(default_factory=lambda: env_float("MATCHER_MAINTENANCE_INTERVAL_SECONDS", 60.0))

    def __post_init__(self) -> None:
        _check_range("MATCHER_SHINGLE_SIZE", self.shingle_size, 3, 5)
        _check_range("MATCHER_MAX_TEXT_BYTES", self.max_text_bytes, 1, 64 << 20)
        _check_range("MATCHER_MATCH_DB_TIMEOUT_SECONDS", self.match_db_timeout, 0.001, 60)
        _check_range("MATCHER_CACHE_SIZE", self.cache_size, 0, 10_000_000)
        _check_range("MATCHER_CACHE_TTL_SECONDS", self.cache_ttl, 0, 3600)
        _check_range("MATCHER_GROW_AFTER", self.grow_after, 20, 50)
        _check_range("MATCHER_SHRINK_AFTER", self.shrink_after, 1, 10)
        _check_range("MATCHER_NEAR_BITS", self.near_bits, 0, 32)
        _check_range("MATCHER_RETENTION_MIN_OBSERVATIONS", self.retention_min_observations, 0, 1 << 31)
        _check_range("MATCHER_RETENTION_MAX_IDLE_SECONDS", self.retention_max_idle, 1, 1e10)
        _check_range("MATCHER_RETENTION_FORGET_SECONDS", self.retention_forget, 1, 1e10)
        _check_range("MATCHER_MAINTENANCE_INTERVAL_SECONDS", self.maintenance_interval, 0.01, 86400)

    def threshold(self, window: int) -> int:
        """k(W); a prompt shorter than the smallest window uses the smallest window's k."""
        return self.thresholds.get(window, self.thresholds[WINDOWS[0]])
