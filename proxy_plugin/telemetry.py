"""Off the request path: a bounded queue of finished requests, sent in batches (ObserveBatch + Report).

``submit`` never waits: a full queue drops the item and counts it. One background task drains the
queue; a batch is whatever is waiting (up to ``batch_size``) when the task wakes up. A Report that timed
out is sent again with the same outcomes (``REPORT_ATTEMPTS``), so a tuner that is briefly slow (a
pause, a busy database) loses nothing.

Calls go through the learning lane of each ``ServiceClient``: its own channel and breaker, never the
request path's. An unreachable or slow service opens the learning breaker (telemetry is then dropped as
``breaker_open`` until a probe succeeds); a batch refused by policy (the tuner's per-source rate limit or
allow-list, a rejected token, the server's learning budget) is dropped as ``refused`` and leaves the
breaker as it was. Neither ever gates Match or Recommend.
"""

from __future__ import annotations

import asyncio
import logging

from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, tuner_pb2

from . import metrics
from .decision import FinishedRequest
from .outcome import build_outcome
from .probes import HostProbes
from .rpc import ServiceClient

log = logging.getLogger(__name__)

# A Report that timed out may still be stored at the tuner, or only late: it is sent again as built, and the
# tuner counts outcome ids it already has as duplicates. Other failures are not retried (refused by policy,
# or the breaker is the answer).
REPORT_ATTEMPTS = 3


class TelemetryPipeline:
    def __init__(
        self,
        matcher: ServiceClient,
        tuner: ServiceClient,
        probes: HostProbes,
        queue_size: int,
        batch_size: int,
        timeout_s: float,
    ) -> None:
        self._matcher = matcher
        self._tuner = tuner
        self._probes = probes
        self._batch_size = max(1, batch_size)
        self._timeout = timeout_s
        self._queue: asyncio.Queue[FinishedRequest] = asyncio.Queue(maxsize=max(1, queue_size))
        self._batch_observe = True
        self._task = asyncio.get_running_loop().create_task(self._run(), name="optimizer-telemetry")

    def submit(self, item: FinishedRequest) -> bool:
        """Enqueue without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            metrics.TELEMETRY_DROPPED.labels("queue_full").inc()
            return False
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far has been sent (or dropped)."""
        await self._queue.join()

    async def close(self, timeout_s: float) -> None:
        """Send what is queued for at most ``timeout_s``, then stop the task."""
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            log.warning("telemetry: %d items unsent at shutdown", self._queue.qsize())
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            try:
                await self._send(batch)
            except Exception:  # never let the worker die
                log.exception("telemetry batch failed")
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _send(self, batch: list[FinishedRequest]) -> None:
        observed = [_observe_request(item) for item in batch if item.decision.fingerprints is not None]
        await asyncio.gather(self._observe(observed), self._report(batch))

    async def _observe(self, observed: list[matcher_pb2.ObserveRequest]) -> None:
        """One ObserveBatch; one Observe per item from the first time a matcher does not know ObserveBatch
        (a release older than it)."""
        if not observed:
            return
        if self._batch_observe:
            request = matcher_pb2.ObserveBatchRequest(observations=observed)
            response, reason = await self._matcher.call("ObserveBatch", request, self._timeout, off_path=True)
            if reason != "unimplemented":
                rejected = len(response.rejected) if response is not None else 0
                _count("observe", len(observed) - rejected, reason)
                metrics.TELEMETRY_DROPPED.labels("rejected").inc(rejected)
                return
            self._batch_observe = False
            log.info("the matcher has no ObserveBatch (an older release): one Observe per request from now on")
        await asyncio.gather(*(self._observe_one(request) for request in observed))

    async def _observe_one(self, request: matcher_pb2.ObserveRequest) -> None:
        _response, reason = await self._matcher.call("Observe", request, self._timeout, off_path=True)
        _count("observe", 1, reason)

    async def _report(self, batch: list[FinishedRequest]) -> None:
        memory = self._probes.read()
        request = tuner_pb2.ReportRequest(outcomes=[build_outcome(item, memory) for item in batch])
        for _attempt in range(REPORT_ATTEMPTS):
            response, reason = await self._tuner.call("Report", request, self._timeout, off_path=True)
            if reason != "timeout":
                break
        if response is None:
            _count("report", len(batch), reason)
            return
        _count_report(response)
        if response.rejected:
            log.warning("tuner rejected %d outcomes, e.g. %s", len(response.rejected), response.rejected[0].reason)


def _observe_request(item: FinishedRequest) -> matcher_pb2.ObserveRequest:
    d = item.decision
    return matcher_pb2.ObserveRequest(model=d.model, fingerprints=d.fingerprints, template_id=d.template_id)


def _count_report(response: tuner_pb2.ReportResponse) -> None:
    """Each outcome by its fate at the tuner: stored (or already known), buffered in its memory, or dropped."""
    metrics.TELEMETRY_SENT.labels("report").inc(response.stored + response.duplicates)
    metrics.TELEMETRY_SENT.labels("report_buffered").inc(response.buffered)
    metrics.TELEMETRY_DROPPED.labels("tuner_full").inc(response.dropped)
    metrics.TELEMETRY_DROPPED.labels("rejected").inc(len(response.rejected))


def _count(kind: str, n: int, reason: str) -> None:
    if reason:
        metrics.TELEMETRY_DROPPED.labels(reason).inc(n)
    else:
        metrics.TELEMETRY_SENT.labels(kind).inc(n)
