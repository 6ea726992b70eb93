"""Recent Match answers, reused for texts whose Match input is identical (one round trip saved).

Match's answer depends only on the text's windows and the tokens inside the largest one
(``prompt_fingerprint.match_key``); a template whose fixed head covers that window — a long
system prompt, or a short prompt whose variable tail starts past its largest window — sends the same
key on every request. Such a request skips the Match round trip and goes straight to Recommend with the
template, unit count and fingerprints Match would have returned. Only matched answers are kept (a new
template must be found as soon as Observe has created it), for a short time-to-live: the answer is as
fresh as the matcher's own soft cache. The key is valid only while the matcher fingerprints with the same
algorithm (``prompt_fingerprint.ALGORITHM_REVISION``): an answer from a matcher of another revision is not kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ollama_optimizer.gen.optimizer.v1 import matcher_pb2
from ollama_optimizer.soft_cache import SoftCache
from prompt_fingerprint import ALGORITHM_REVISION, MatchKey, match_key_off_loop, revision_of

from .metrics import MATCH_MEMO


@dataclass(frozen=True)
class MatchAnswer:
    """What the request path needs from a Match: the template and the fingerprints for Observe."""

    template_id: int
    prompt_units: int
    fingerprints: matcher_pb2.Fingerprints


class MatchMemo:
    """Matched answers by Match key, bounded in size and age."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._cache: SoftCache[MatchAnswer] = SoftCache(
            size, ttl_s, clock, hits=MATCH_MEMO.labels("hit"), misses=MATCH_MEMO.labels("miss")
        )

    @property
    def enabled(self) -> bool:
        return self._cache.enabled

    async def recall(self, text: str) -> tuple[MatchKey, MatchAnswer | None]:
        """(the text's Match key, the recent matched answer for it with this text's unit count, or None)."""
        key = await match_key_off_loop(text)
        _hit, answer = self._cache.get(key.key)
        if answer is None:
            return key, None
        fingerprints = matcher_pb2.Fingerprints()
        fingerprints.CopyFrom(answer.fingerprints)
        fingerprints.unit_count = key.unit_count
        return key, MatchAnswer(answer.template_id, key.unit_count, fingerprints)

    def remember(self, key: bytes, match: matcher_pb2.MatchResponse) -> None:
        if match.matched and revision_of(match.fingerprints.algorithm_version) == ALGORITHM_REVISION:
            self._cache.put(key, MatchAnswer(match.template_id, match.prompt_units, match.fingerprints))
