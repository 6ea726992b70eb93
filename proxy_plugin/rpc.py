"""One service seen from the plugin: its channel, its circuit breaker, and calls that never raise."""
from __future__ import annotations

import logging
from typing import Any

import grpc

from ollama_optimizer.channels import create_channel

from . import metrics
from .breaker import CircuitBreaker
from .config import PluginConfig

log = logging.getLogger(__name__)

# The service answered, the request was at fault: no reason to open the breaker.
_CALLER_FAULTS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
})


class ServiceClient:
    """Calls ``stub.<method>`` with a deadline; no retries; failures feed the breaker.

    ``call`` returns ``(response, "")`` or ``(None, reason)`` with reason one of
    ``breaker_open | timeout | rpc_error``.
    """

    def __init__(self, name: str, address: str, stub_class: Any, cfg: PluginConfig) -> None:
        self.name = name
        gauge = metrics.BREAKER_STATE.labels(name)
        gauge.set(0)
        self.breaker = CircuitBreaker(cfg.breaker_threshold, cfg.breaker_cooldown_s, on_change=gauge.set)
        self.channel = create_channel(
            address, token=cfg.auth_token, tls_ca=cfg.tls_ca, tls_cert=cfg.tls_cert, tls_key=cfg.tls_key
        )
        self._stub = stub_class(self.channel)
        self._metadata = (("x-optimizer-source", cfg.source_id),) if cfg.source_id else None

    async def call(self, method: str, request: Any, timeout_s: float) -> tuple[Any, str]:
        if not self.breaker.allow():
            return None, "breaker_open"
        if timeout_s <= 0:
            self.breaker.abandon()
            return None, "budget_exhausted"
        try:
            response = await getattr(self._stub, method)(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            metrics.RPC_ERRORS.labels(self.name, method, code.name).inc()
            if code in _CALLER_FAULTS:
                self.breaker.success()
            else:
                self.breaker.failure()
            log.debug("%s.%s failed: %s %s", self.name, method, code.name, exc.details())
            return None, "timeout" if code is grpc.StatusCode.DEADLINE_EXCEEDED else "rpc_error"
        except BaseException:
            self.breaker.abandon()
            raise
        self.breaker.success()
        return response, ""

    async def close(self) -> None:
        await self.channel.close()
