"""One service seen from the plugin: two lanes (request path, learning), each with its own channel and
circuit breaker, and calls that never raise."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from ollama_optimizer.channels import create_channel

from . import metrics
from .breaker import CircuitBreaker
from .config import PluginConfig

log = logging.getLogger(__name__)

# The service answered, the request was at fault: no reason to open the breaker.
_CALLER_FAULTS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

# The service answered and refused this caller: the tuner's Report guard (RESOURCE_EXHAUSTED over the
# per-source rate, PERMISSION_DENIED outside TUNER_REPORT_SOURCES), the bearer-token check
# (UNAUTHENTICATED). gRPC's own load shedding (maximum_concurrent_rpcs) also answers RESOURCE_EXHAUSTED,
# told apart only by its free-text details, and the servers' learning budget sheds Observe/Report with it
# before they can take the request path's slots. Off the request path none of these feed a breaker; on
# the request path (Match, Recommend) load shedding counts as a failure.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)

REFUSAL_WARN_INTERVAL_S = 60.0


class _Throttled:
    """Lets one message through per ``interval_s`` and counts the ones it swallowed meanwhile."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def ready(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self.suppressed += 1
            return False
        self._last = now
        return True


class _Lane:
    """A channel and the breaker guarding it."""

    def __init__(self, channel: grpc.aio.Channel, stub_class: Any, breaker: CircuitBreaker) -> None:
        self.channel = channel
        self.stub = stub_class(channel)
        self.breaker = breaker


class ServiceClient:
    """Calls ``stub.<method>`` with a deadline; no retries; failures feed the lane's breaker.

    The request lane (``Match``, ``Recommend``) and the learning lane (``off_path``: ``Observe``,
    ``Report``) have separate channels (separate connections) and separate breakers: a slow or failing
    learning call never opens the breaker that gates the request path, nor queues behind it.

    ``call`` returns ``(response, "")`` or ``(None, reason)`` with reason one of
    ``breaker_open | budget_exhausted | timeout | rpc_error | unimplemented`` (a release of the service
    without the method: no verdict against its health), and for ``off_path`` calls also
    ``refused``: the service turned the call down by policy (see ``_REFUSALS``); that leaves the breaker
    as it was, is counted and logged as a rate-limited warning. gRPC errors never raise; cancellation
    propagates (after freeing a half-open probe slot).
    """

    def __init__(self, name: str, address: str, stub_class: Any, cfg: PluginConfig) -> None:
        self.name = name
        self._request = _Lane(
            self._channel(address, cfg, separate=False),
            stub_class,
            self._breaker(cfg, cfg.breaker_cooldown_s, metrics.BREAKER_STATE.labels(name)),
        )
        self._learning = _Lane(
            self._channel(address, cfg, separate=True),
            stub_class,
            self._breaker(cfg, cfg.learning_breaker_cooldown_s, metrics.LEARNING_BREAKER_STATE.labels(name)),
        )
        self._refusal_warning = _Throttled(REFUSAL_WARN_INTERVAL_S)

    @staticmethod
    def _breaker(cfg: PluginConfig, cooldown_s: float, gauge: Any) -> CircuitBreaker:
        gauge.set(0)
        return CircuitBreaker(cfg.breaker_threshold, cooldown_s, on_change=gauge.set)

    @staticmethod
    def _channel(address: str, cfg: PluginConfig, *, separate: bool) -> grpc.aio.Channel:
        return create_channel(
            address,
            token=cfg.auth_token,
            tls_ca=cfg.tls_ca,
            tls_cert=cfg.tls_cert,
            tls_key=cfg.tls_key,
            own_connection=separate,
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """The request path's breaker."""
        return self._request.breaker

    @property
    def learning_breaker(self) -> CircuitBreaker:
        return self._learning.breaker

    @property
    def channel(self) -> grpc.aio.Channel:
        """The request path's channel."""
        return self._request.channel

    async def call(
        self, method: str, request: Any, timeout_s: float, *, off_path: bool = False, background: bool = False
    ) -> tuple[Any, str]:
        if background:
            return await self._background(method, request, timeout_s)
        lane = self._learning if off_path else self._request
        breaker = lane.breaker
        if not breaker.allow():
            return None, "breaker_open"
        if timeout_s <= 0:
            breaker.abandon()
            return None, "budget_exhausted"
        try:
            response = await getattr(lane.stub, method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            metrics.RPC_ERRORS.labels(self.name, method, code.name).inc()
            if off_path and code in _REFUSALS:
                breaker.abandon()  # no verdict on the service's health; frees a half-open probe slot
                self._warn_refused(method, code, exc.details())
                return None, "refused"
            if code is grpc.StatusCode.UNIMPLEMENTED:  # a release of the service without this method
                breaker.success()
                return None, "unimplemented"
            if code in _CALLER_FAULTS:
                breaker.success()
            else:
                breaker.failure()
            log.debug("%s.%s failed: %s %s", self.name, method, code.name, exc.details())
            return None, "timeout" if code is grpc.StatusCode.DEADLINE_EXCEEDED else "rpc_error"
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        return response, ""

    async def _background(self, method: str, request: Any, timeout_s: float) -> tuple[Any, str]:
        """A memory-only call made off the request path on the request lane's channel (``Lease``, a leased
        request's ``Recommend``): skipped while the lane's breaker is open, and never a verdict on it (nor a
        probe): only the request path's own calls open and close it."""
        if self._request.breaker.rejecting():
            return None, "breaker_open"
        try:
            return await getattr(self._request.stub, method)(request, timeout=timeout_s), ""
        except grpc.aio.AioRpcError as exc:
            metrics.RPC_ERRORS.labels(self.name, method, exc.code().name).inc()
            return None, "timeout" if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED else "rpc_error"

    def _warn_refused(self, method: str, code: grpc.StatusCode, details: str | None) -> None:
        if not self._refusal_warning.ready():
            log.debug("%s refused %s: %s %s", self.name, method, code.name, details)
            return
        suppressed, self._refusal_warning.suppressed = self._refusal_warning.suppressed, 0
        log.warning(
            "%s refused %s: %s %s (telemetry dropped; the circuit breaker is not affected%s)",
            self.name,
            method,
            code.name,
            details,
            f"; {suppressed} more refusals since the last warning" if suppressed else "",
        )

    def connect(self) -> None:
        """Start connecting now (non-blocking): the first request then finds the channel ready instead of
        paying the TCP/HTTP2 (and TLS) handshake inside its deadline."""
        for lane in (self._request, self._learning):
            lane.channel.get_state(try_to_connect=True)

    async def close(self) -> None:
        await asyncio.gather(self._request.channel.close(), self._learning.channel.close())
