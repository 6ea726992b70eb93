"""The tuner's leases, held per model and renewed off the request path (tuner_service/lease.py grants them).

A lease says which options the tuner keeps a model at and, per recent template, how to check that a
request's need fits them. While a request's model holds a valid lease that covers it, the request needs
only Match: it goes out with the leased options and its Recommend is sent off the request path. A
keeper task per requested model fetches the lease and renews it when a quarter of its life is left, as
long as requests for the model keep coming; a model that stops being requested lets its lease expire.
A refused or failed fetch is retried on the model's next request after ``RETRY_S``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from . import metrics
from .outcome import stat_int

MAX_MODELS = 256  # models whose leases are held (least recently requested ones are forgotten)
RENEW_AT = 0.75  # renew when this share of the life has passed
RETRY_S = 1.0  # after a refusal or a failure, the next fetch waits at least this long
FULL_SHARE = 0.9  # an answer that used this share of its context (or stopped at a length) ends the model's lease

Fetch = Callable[[str], Awaitable[tuner_pb2.LeaseResponse | None]]


@dataclass(frozen=True)
class Rule:
    output_tokens: int
    floor_ctx: int
    confidence: float


@dataclass(frozen=True)
class ModelLease:
    num_ctx: int
    num_batch: int
    tokens_per_unit: float
    overhead_tokens: int
    rules: dict[int, Rule]
    expires: float  # on the book's clock

    def answers(self, rec: tuner_pb2.RecommendResponse) -> bool:
        """Whether a Recommend answer is the lease's own (APPLY its options)."""
        return rec.action == tuner_pb2.APPLY and (rec.num_ctx, rec.num_batch) == (self.num_ctx, self.num_batch)

    def covers(self, template_id: int, units: int, messages: int, num_predict: int, min_confidence: float) -> bool:
        """Whether Recommend would keep this request at the leased options (tuner_pb2.LeaseResponse)."""
        rule = self.rules.get(template_id) if template_id else None
        if rule is None or rule.confidence < min_confidence:
            return False
        prompt = math.ceil(units * self.tokens_per_unit) + self.overhead_tokens * (messages + 1)
        need = prompt + (num_predict if num_predict > 0 else rule.output_tokens)
        return max(need, rule.floor_ctx) <= self.num_ctx


def filled(stats: dict[str, Any], num_ctx: int) -> bool:
    """Whether an answer came near its context (or stopped at a length): the tuner may grow the context or
    raise the template's floor from its outcome, which a lease granted before it does not know yet."""
    used = stat_int(stats, "prompt_eval_count") + stat_int(stats, "eval_count")
    return stats.get("done_reason") == "length" or (num_ctx > 0 and used >= FULL_SHARE * num_ctx)


def _lease(answer: tuner_pb2.LeaseResponse, expires: float) -> ModelLease:
    return ModelLease(
        answer.num_ctx,
        answer.num_batch,
        answer.units_to_tokens_ratio,
        answer.overhead_tokens_per_message,
        {r.template_id: Rule(r.output_tokens, r.floor_ctx, r.confidence) for r in answer.rules},
        expires,
    )


@dataclass
class _Held:
    lease: ModelLease | None = None
    wanted_at: float = -math.inf  # the model's last request
    retry_at: float = -math.inf
    keeper: asyncio.Task[None] | None = None


class LeaseBook:
    """Leases by model; ``wait`` is the keeper's pause before a renewal (asyncio.sleep)."""

    def __init__(
        self,
        fetch: Fetch,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._wait = wait
        self._held: OrderedDict[str, _Held] = OrderedDict()

    def lease(self, model: str) -> ModelLease | None:
        """The model's valid lease, if any; notes the request."""
        now = self._clock()
        held = self._held.pop(model, None) or _Held()
        self._held[model] = held  # most recently requested last
        while len(self._held) > MAX_MODELS:
            self._forget(self._held.popitem(last=False)[1])
        held.wanted_at = now
        lease = held.lease
        return lease if lease is not None and now < lease.expires else None

    def keep(self, model: str) -> None:
        """Start fetching the model's lease unless a keeper runs or a retry is not due (after the request's
        own call: the fetch does not compete with it)."""
        held = self._held.get(model)
        if held is not None and (held.keeper is None or held.keeper.done()) and self._clock() >= held.retry_at:
            held.keeper = asyncio.ensure_future(self._keep(model, held))

    def revoke(self, model: str, wait_s: float = 0.0) -> None:
        """Forget the model's lease (the tuner answered otherwise, or an outcome it has not seen yet may change
        its answer); a new one is fetched on a request at least ``wait_s`` from now."""
        held = self._held.get(model)
        if held is not None:
            self._forget(held)
            held.lease, held.retry_at = None, self._clock() + wait_s
            metrics.LEASES.labels("revoked").inc()

    async def close(self) -> None:
        keepers = [h.keeper for h in self._held.values() if h.keeper is not None]
        for held in self._held.values():
            self._forget(held)
        await asyncio.gather(*keepers, return_exceptions=True)

    @staticmethod
    def _forget(held: _Held) -> None:
        if held.keeper is not None and not held.keeper.done():
            held.keeper.cancel()

    async def _keep(self, model: str, held: _Held) -> None:
        """Fetch the lease, then renew it while the model is requested."""
        while True:
            sent = self._clock()
            answer = await self._fetch(model)
            if answer is None or not answer.granted:
                metrics.LEASES.labels("failed" if answer is None else "refused").inc()
                held.retry_at = sent + RETRY_S
                if answer is not None:  # the tuner says no: a lease still held must not be used
                    held.lease = None
                return
            metrics.LEASES.labels("granted").inc()
            life = answer.ttl_ms / 1000.0
            held.lease = _lease(answer, sent + life)
            await self._wait(life * RENEW_AT)
            if held.wanted_at < sent:  # not requested since the last fetch: let it expire
                return
