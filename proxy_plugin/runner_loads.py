"""Which requests made Ollama load a runner, judged from what this gateway sent to it.

Ollama's load_duration also counts the time a request waits behind earlier requests of the same model,
so a long load_duration alone is no reload. Ollama's own clock tells the wait apart: a request arrived
at ``created_at - total_duration`` of its final chunk, and the earlier requests of its model ended at
their final ``created_at``; what load_duration holds beyond that wait is the load. The gateway may read
the answers of one model in another order than Ollama served them, so a request is judged once every
request of its model sent before it ended has ended too (bounded by the requests in flight). Without
timestamps the gateway judges from the order in which it sent its requests.
A request with a long load_duration loaded a runner when the runner could not have been ready for it:
its options differ from the previous request of the model (Ollama restarts the runner on any change of
num_ctx or num_batch), no request of the model was in flight (nothing to wait behind: a first load, an
expiry or an eviction), or another model was loaded since the previous request of this model (which
may have evicted it). Otherwise the long load_duration was a queue wait.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

MAX_MODELS = 256
ENDS_KEPT = 64  # answered requests per model whose end times are kept
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def ollama_time(value: Any) -> float | None:
    """Unix seconds of an RFC 3339 timestamp as Ollama writes it (nanosecond fractions), None when malformed."""
    match = _TIMESTAMP.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    base, fraction, zone = match.groups()
    try:
        stamp = datetime.fromisoformat(base + (fraction or "")[:7] + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return stamp.timestamp()


@dataclass(eq=False)
class Sent:
    """What the gateway knew when it sent one request, and Ollama's clock of its answer once it ended."""

    model: str
    changed: bool  # options differ from the previous request of the model (or none was seen)
    idle: bool  # no request of the model was in flight
    others_loaded: bool  # another model was loaded since the previous request of this model
    announced: bool  # the options changed from a known previous request: counted as a load when sent
    seq: int = 0  # send order
    sent_before_end: int = 0  # requests of any model sent before this one ended (its seq included)
    clock: tuple[float, float] | None = None  # Ollama's arrival and end of the answer (Unix seconds)
    ctx_mark: int = 0  # default_sightings.DefaultSightings.sent's mark for this request
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


def answer_clock(final: Mapping[str, Any] | None) -> tuple[float | None, int]:
    """The end (final ``created_at``) and ``total_duration`` of an answer's final object."""
    if final is None:
        return None, 0
    total = final.get("total_duration")
    return ollama_time(final.get("created_at")), total if isinstance(total, int) and total > 0 else 0


class RunnerLoads:
    """Per model: options last sent, requests in flight, and the loads of other models since."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self._max = max_models
        self._options: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._loads_at: dict[str, int] = {}  # the load counter when the model's previous request was sent
        self._inflight: dict[str, set[Sent]] = {}
        self._loads = 0  # loads of any model, as far as the gateway can tell
        self._ends: dict[str, deque[tuple[int, float, float]]] = {}  # model -> (send order, arrival, end)
        self._sent = 0
        self.waiting = 0  # judgements waiting for requests that were ahead of theirs to end

    def sent(self, model: str, options: tuple[int, int]) -> Sent:
        previous = self._options.pop(model, None)
        self._sent += 1
        ticket = Sent(
            model,
            changed=previous != options,
            idle=not self._inflight.get(model),
            others_loaded=self._loads > self._loads_at.get(model, self._loads),
            announced=previous is not None and previous != options,
            seq=self._sent,
        )
        if ticket.announced:
            self._loads += 1  # Ollama restarts the runner for these options
        self._options[model] = options
        self._loads_at[model] = self._loads
        self._inflight.setdefault(model, set()).add(ticket)
        while len(self._options) > self._max:
            gone, _ = self._options.popitem(last=False)
            self._loads_at.pop(gone, None)
            self._ends.pop(gone, None)
        return ticket

    def finished(self, ticket: Sent, end: float | None = None, total_ns: int = 0) -> None:
        """The request has ended (answered, failed or cancelled); ``end`` and ``total_ns`` are the final
        ``created_at`` (Unix seconds) and ``total_duration`` of an answer (see ``answer_clock``)."""
        inflight = self._inflight.get(ticket.model, set())
        inflight.discard(ticket)
        if not inflight:
            self._inflight.pop(ticket.model, None)
        ticket.sent_before_end = self._sent
        if end is not None and total_ns > 0:
            ticket.clock = (end - total_ns / 1e9, end)
            if ticket.model in self._options:
                self._ends.setdefault(ticket.model, deque(maxlen=ENDS_KEPT)).append((ticket.seq, *ticket.clock))
        ticket.ended.set()

    async def judge(self, ticket: Sent, load_ns: int, threshold_ns: int) -> tuner_pb2.RunnerLoad:
        """RUNNER_LOADED or RUNNER_KEPT for an answered request, once ``finished``. With Ollama's clock, the
        judgement waits until the requests of the model sent before this one ended have ended too: any of
        them may have been ahead of it in Ollama's queue, though the gateway read its answer later."""
        if ticket.clock is not None:
            return await self._judge_by_clock(ticket, load_ns, threshold_ns, ticket.clock)
        if load_ns < threshold_ns or not (ticket.changed or ticket.idle or ticket.others_loaded):
            return tuner_pb2.RUNNER_KEPT
        if not ticket.announced:
            self._loads += 1  # a load the options did not announce: other models may have been evicted
            self._loads_at[ticket.model] = self._loads
        return tuner_pb2.RUNNER_LOADED

    async def _judge_by_clock(
        self, ticket: Sent, load_ns: int, threshold_ns: int, clock: tuple[float, float]
    ) -> tuner_pb2.RunnerLoad:
        ahead = [t for t in self._inflight.get(ticket.model, ()) if t.seq <= ticket.sent_before_end]
        self.waiting += bool(ahead)
        try:
            for other in ahead:
                await other.ended.wait()
        finally:
            self.waiting -= bool(ahead)
        arrival, end = clock
        # The runner was free once the requests of the model that arrived (or were sent) before this one and
        # ended before it had ended (Ollama's arrival order may differ from the order they were sent in).
        ends = self._ends.get(ticket.model, ())
        free = max((e for seq, a, e in ends if (a <= arrival or seq < ticket.seq) and e < end), default=arrival)
        waited_ns = max(0.0, free - arrival) * 1e9
        return tuner_pb2.RUNNER_LOADED if load_ns - waited_ns >= threshold_ns else tuner_pb2.RUNNER_KEPT
