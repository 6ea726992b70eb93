"""The shared metrics interceptor: one wrapped handler per method, go-grpc-prometheus counters per call."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
from prometheus_client import REGISTRY

from ollama_optimizer.grpc_interceptors import MetricsInterceptor

METHOD = "/test.v1.Interceptor/Echo"


class _Context:
    def code(self) -> Any:
        return None


def _handled() -> float:
    labels = {"grpc_type": "unary", "grpc_service": "test.v1.Interceptor", "grpc_method": "Echo", "grpc_code": "OK"}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_handler_wrapped_once_per_method_and_counted_per_call() -> None:
    async def echo(request: Any, context: Any) -> Any:
        return request

    handler = grpc.unary_unary_rpc_method_handler(echo)

    async def continuation(_details: Any) -> grpc.RpcMethodHandler:
        return handler

    interceptor = MetricsInterceptor()
    details = SimpleNamespace(method=METHOD, invocation_metadata=())
    first = await interceptor.intercept_service(continuation, details)
    second = await interceptor.intercept_service(continuation, details)
    assert first is second and first is not handler
    before = _handled()
    assert await first.unary_unary("ping", _Context()) == "ping"
    assert await second.unary_unary("pong", _Context()) == "pong"
    assert _handled() == before + 2
