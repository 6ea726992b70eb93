"""Poisoning resistance for Report: a source allow-list and a per-source token-bucket rate limit.

A source is an identity the transport authenticated, never a name the client writes: the name a
per-source bearer token stands for (``OPTIMIZER_SOURCE_TOKENS``) as ``token:<name>``, else the
verified mTLS client certificate (its first subject alternative name, else its common name) as
``cert:<name>``, else the peer's host as ``peer:<address>``. With ``TUNER_REPORT_SOURCES`` set,
only listed sources may report (PERMISSION_DENIED otherwise); each source may report
``TUNER_REPORT_RATE`` outcomes/s with bursts of ``TUNER_REPORT_BURST`` (RESOURCE_EXHAUSTED beyond).
Refused batches are counted and never touch learned state. Authentication itself (bearer token,
mTLS) happens before, in the server and its interceptor.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ollama_optimizer.settings_env import setting

from . import metrics

MAX_SOURCE_LEN = 128
MAX_BUCKETS = 10_000


def _sources(raw: str) -> frozenset[str]:
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class GuardSettings:
    """Allow-list (empty = any source) and rate limit (rate <= 0 = unlimited)."""

    allowed_sources: frozenset[str] = setting(
        "",
        "TUNER_REPORT_SOURCES",
        "Report allow-list, comma-separated (empty = any source). A source is what the transport authenticated: "
        "`token:<name>` for a per-source token (`OPTIMIZER_SOURCE_TOKENS`), else `cert:<name>` for an mTLS client "
        "certificate (its first subject alternative name, else its common name), else `peer:<ip>`; never a name "
        "the client writes",
        parse=_sources,
        shown_default="*(any)*",
    )
    rate_per_second: float = setting(
        2000.0,
        "TUNER_REPORT_RATE",
        "per-source Report rate limit (outcomes/s, token bucket; 0 = off); beyond it RESOURCE_EXHAUSTED",
        low=0,
        high=1e9,
    )
    burst: int = setting(20_000, "TUNER_REPORT_BURST", "burst of that rate limit (outcomes)", low=0, high=1 << 31)


class Refused(Exception):
    """A Report batch refused before validation; ``code`` names the gRPC status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TokenBucket:
    """Classic token bucket: ``take(n)`` succeeds when n tokens are available.

    Hand-written: a Report over the rate is refused at once (never delayed), on an injectable clock;
    aiolimiter's bucket makes callers wait and ``limits`` counts windows rather than a bucket with a burst.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), now

    def take(self, n: int, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True


def source_of(identities: Iterable[bytes] | None, peer: str, token_source: str = "") -> str:
    """The source a verified per-source token names, else the verified client certificate's name
    (``context.peer_identities()``), else the peer host."""
    if token_source:
        return token_source
    first = next(iter(identities or ()), None)
    if first is not None:
        return "cert:" + first.decode("utf-8", "replace")[:MAX_SOURCE_LEN]
    if peer.startswith(("ipv4:", "ipv6:")):
        return "peer:" + peer.split(":", 1)[1].rsplit(":", 1)[0]
    return "peer:" + peer[:MAX_SOURCE_LEN]


class ReportGuard:
    """Decides, per Report batch, whether its source may move learned state."""

    def __init__(self, settings: GuardSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or GuardSettings()
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, source: str, outcomes: int) -> None:
        """Raise Refused when ``source`` may not report ``outcomes`` outcomes now."""
        allowed = self.settings.allowed_sources
        if allowed and source not in allowed:
            metrics.REPORTS_REFUSED.labels("unknown_source").inc()
            raise Refused("PERMISSION_DENIED", f"source {source[:64]!r} is not allowed to report")
        if self.settings.rate_per_second <= 0 or outcomes == 0:
            return
        if not self._bucket(source).take(outcomes, self._clock()):
            metrics.REPORTS_REFUSED.labels("rate_limited").inc()
            raise Refused(
                "RESOURCE_EXHAUSTED",
                f"source {source[:64]!r} is over its report rate ({self.settings.rate_per_second:g}/s)",
            )

    def _bucket(self, source: str) -> TokenBucket:
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = TokenBucket(self.settings.rate_per_second, self.settings.burst, self._clock())
            self._buckets[source] = bucket
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return bucket
