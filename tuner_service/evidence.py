"""How much a reported ``prompt_eval_count`` can be believed: it depends on the Ollama version.

- Before PR 5371 (mid 2024) the count went missing or shrank on a cache hit (issues 2068, 3427).
- The 0.30 llama-server runner counted only newly processed tokens until PR 16428 (issue 16414).
- Elsewhere it is the logical prompt total; since PR 17943 ``prompt_eval_cached_count`` reports the
  cached part separately.

A count that may exclude the cache is a lower bound: it never reads as a truncation, never feeds the
tokens-per-unit calibration and never lowers a need. Where signals disagree the conservative reading wins
and a note says so (shown by explain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOTALS, UNCACHED, UNKNOWN = "totals", "uncached", "unknown"
MAX_HOSTS = 1024  # hosts whose version is remembered (labels are operator-chosen; the bound guards memory)
# Versions whose counts may leave out cached tokens: [low, high) ranges, erring towards the older bound.
UNCACHED_VERSIONS = (((0, 0, 0), (0, 3, 0)), ((0, 30, 0), (0, 31, 0)))
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.match(text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def count_semantics(version: str, cached_known: bool) -> str:
    """totals when the count includes the cache, uncached when it may not, unknown without a version."""
    if cached_known:
        return TOTALS
    parsed = parse_version(version) if version else None
    if parsed is None:
        return UNKNOWN
    return UNCACHED if any(low <= parsed < high for low, high in UNCACHED_VERSIONS) else TOTALS


def at_cut(count: int, ctx: int) -> bool:
    """``count`` sits where Ollama cuts an over-long prompt in a ``ctx`` context (about half of it)."""
    return abs(count - ctx / 2) <= 16


@dataclass(frozen=True)
class CountReading:
    """The prompt tokens an outcome shows, and whether they are the whole prompt."""

    semantics: str
    prompt_tokens: int  # best known count of the whole prompt (0 = none reported)
    whole: bool  # prompt_tokens is the whole prompt: usable for calibration and the low-count test
    note: str = ""  # why the count was not taken at face value


def read_counts(version: str, cached_known: bool, count: int, cached: int, cold_cache: bool) -> CountReading:
    """Interpret one outcome's counts; ``cold_cache`` is true when the request loaded the model."""
    semantics = count_semantics(version, cached_known)
    if count <= 0:
        return CountReading(
            semantics,
            0,
            False,
            "no prompt_eval_count reported (a fully cached prompt on older Ollama): nothing learned from it",
        )
    if cached_known and count < cached:
        return CountReading(
            semantics,
            count + cached,
            False,
            f"prompt_eval_count {count} below the cached count {cached}: read as uncached tokens plus the cache",
        )
    if semantics == UNCACHED and not cold_cache:
        return CountReading(
            semantics, count, False, f"Ollama {version} counts only uncached prompt tokens: counts are lower bounds"
        )
    return CountReading(semantics, count, True)


@dataclass
class HostVersions:
    """The Ollama version each host (label) last reported, learned from outcomes and stored with the models'
    state: an outcome that carries no version (an agent, a gateway that could not read /api/version) is
    read as its host's last reported one, also after a restart."""

    versions: dict[str, tuple[str, float]] = field(default_factory=dict)  # host -> (version, reported at)

    def learn(self, host: str, version: str, at: float) -> None:
        held = self.versions.get(host)
        if version and ((held is not None and at >= held[1]) or (held is None and len(self.versions) < MAX_HOSTS)):
            self.versions[host] = (version, at)

    def version(self, host: str) -> str:
        return self.versions.get(host, ("", 0.0))[0]
