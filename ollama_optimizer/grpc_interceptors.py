"""Server interceptors: go-grpc-prometheus metrics, optional bearer-token auth, the learning budget."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from prometheus_client import Counter, Histogram

from .buckets import decades
from .build_info import register_build_info
from .source_tokens import SourceTokens, bearer

# Sub-millisecond resolution: the hot RPCs (Match, Recommend) answer within milliseconds.
HANDLING_BUCKETS = decades(0.0001, 10.0)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")

SERVER_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
SERVER_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.", (*_LABELS, "grpc_code")
)
SERVER_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Response latency of RPCs handled by the server.",
    _LABELS,
    buckets=HANDLING_BUCKETS,
)
BUILD_INFO = register_build_info()

if TYPE_CHECKING:  # grpc's classes are generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
    # What an aio server keeps in ``Handler.unary_unary`` (the stubs describe the sync server's callables).
    AioUnary = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

# Probes and discovery stay open without a token (Kubernetes gRPC probes carry none).
UNAUTHENTICATED_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def _split_method(full_method: str) -> tuple[str, str]:
    _, service, method = full_method.split("/", 2)
    return service, method


def _rpc_type(handler: Handler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


class _MethodMetrics:
    """The metric children of one method, looked up once (no per-call ``labels()``)."""

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = SERVER_STARTED.labels(*labels)
        self.handling = SERVER_HANDLING.labels(*labels)
        self._handled: dict[str, Counter] = {}

    def handled(self, code: object) -> Counter:
        name = _code_name(code)
        child = self._handled.get(name)
        if child is None:
            child = self._handled[name] = SERVER_HANDLED.labels(*self.labels, name)
        return child


def _observed(handler: Handler, full_method: str) -> Handler:
    """``handler`` (unary-unary) counted and timed under its method's labels."""
    metrics = _MethodMetrics((_rpc_type(handler), *_split_method(full_method)))
    inner = cast("AioUnary", handler.unary_unary)
    perf_counter = time.perf_counter

    async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metrics.started.inc()
        t0 = perf_counter()
        code: object = grpc.StatusCode.UNKNOWN
        try:
            response = await inner(request, context)
            code = context.code() or grpc.StatusCode.OK
            return response
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            metrics.handling.observe(perf_counter() - t0)
            metrics.handled(code).inc()

    return grpc.unary_unary_rpc_method_handler(
        observed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Replaces the unary handlers of the methods it ``wants`` by ``wrap(handler, method)``.

    The wrapped handler is built once per method and reused while the inner handler is the same
    object (registered handlers are; a per-call handler, e.g. an auth denial, is wrapped per call).
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def wants(self, method: str) -> bool:
        return True

    def wrap(self, handler: Handler, method: str) -> Handler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not self.wants(method):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class MetricsInterceptor(_WrappingInterceptor):
    """Counts and times unary RPCs under the go-grpc-prometheus metric names."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        return _observed(handler, method)


def _code_name(code: object) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode.UNKNOWN.name


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED; the token is the
    shared one (when set) or one of the per-source tokens."""

    def __init__(self, token: str, sources: SourceTokens | None = None) -> None:
        self._expected = token.encode() if token else None
        self._sources = sources or SourceTokens()

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        service, _ = _split_method(handler_call_details.method)
        if service in UNAUTHENTICATED_SERVICES or self._authorized(handler_call_details):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler

        async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        return grpc.unary_unary_rpc_method_handler(
            deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        presented = bearer(details.invocation_metadata)
        if not presented:
            return False
        if self._expected is not None and hmac.compare_digest(presented.encode(), self._expected):
            return True
        return bool(self._sources.source(presented))


# Off the request path: the gateways' telemetry. Everything else is served within the global limit only.
LEARNING_METHODS = frozenset(
    {"/optimizer.v1.Matcher/Observe", "/optimizer.v1.Matcher/ObserveBatch", "/optimizer.v1.Tuner/Report"}
)


class LearningBudget(_WrappingInterceptor):
    """At most ``limit`` learning RPCs (``LEARNING_METHODS``) run at once; the others are shed at once.

    With ``limit`` below the server's ``maximum_concurrent_rpcs``, learning calls stalled on a slow
    database can never take the slots the request path (Match, Recommend) needs: an extra one is
    answered RESOURCE_EXHAUSTED immediately instead of holding a slot for its whole deadline.
    """

    def __init__(self, limit: int, methods: frozenset[str] = LEARNING_METHODS) -> None:
        super().__init__()
        self.limit = limit
        self.in_flight = 0
        self._methods = methods

    def wants(self, method: str) -> bool:
        return method in self._methods

    def wrap(self, handler: Handler, method: str) -> Handler:
        inner = cast("AioUnary", handler.unary_unary)

        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.in_flight >= self.limit:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"learning budget exhausted: {self.limit} Observe/Report calls in flight",
                )
            self.in_flight += 1
            try:
                return await inner(request, context)
            finally:
                self.in_flight -= 1

        return grpc.unary_unary_rpc_method_handler(
            bounded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
