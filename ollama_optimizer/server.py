"""gRPC service scaffolding shared by the matcher and the tuner.

aio server with health + reflection, metrics and auth interceptors, optional TLS,
load shedding (maximum_concurrent_rpcs, and a smaller budget for the learning RPCs),
keepalive, a failed bind raising, a Prometheus /metrics endpoint, and graceful
shutdown (NOT_SERVING -> drain -> stop(grace)).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from .channels import KEEPALIVE
from .config import ServerConfig, StartupError
from .grpc_interceptors import BearerTokenInterceptor, LearningBudget, MetricsInterceptor

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]
# The context of an RPC a servicer answers; helpers shared by several RPCs take any of them.
Context = grpc.aio.ServicerContext[Any, Any]
# Health name that is SERVING while the process answers at all (liveness probes; see db_health).
LIVENESS = "liveness"
DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024  # gRPC's own default


class BindError(StartupError):
    """The listen address could not be bound (in use, or invalid)."""


@dataclass
class RunningServer:
    """A started gRPC server; ``port`` is the bound port (useful with port 0)."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    port: int
    metrics_port: int | None
    before_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # e.g. health watchers

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish for ``grace`` seconds, then stop."""
        for hook in self.before_stop:
            await hook()
        for name in (*self.service_names, "", LIVENESS):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


def _server_options(cfg: ServerConfig, max_receive_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ("grpc.max_connection_age_ms", cfg.max_connection_age_seconds * 1000),
        ("grpc.max_connection_age_grace_ms", int(cfg.grace_seconds * 1000)),
        ("grpc.max_receive_message_length", max_receive_bytes),
        *KEEPALIVE.server_options(),
    ]


def _credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    if not cfg.tls_cert:
        return None
    client_ca = Path(cfg.tls_client_ca).read_bytes() if cfg.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def start_server(
    cfg: ServerConfig,
    registrars: list[Registrar],
    service_names: tuple[str, ...],
    *,
    serve_metrics: bool = True,
    serving: bool = True,
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES,
) -> RunningServer:
    """Build, bind and start a server exposing ``service_names`` plus health and reflection.

    Health reports SERVING for the server and ``service_names`` (NOT_SERVING with ``serving=False``),
    and for ``LIVENESS`` until the server stops.
    Requests up to ``max_receive_bytes`` reach the handlers (larger ones: RESOURCE_EXHAUSTED from gRPC).
    """
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
    if cfg.auth_token or cfg.source_tokens:
        interceptors.append(BearerTokenInterceptor(cfg.auth_token, cfg.source_tokens))
    interceptors.append(LearningBudget(cfg.learning_rpcs))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=_server_options(cfg, max_receive_bytes),
        maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
    )
    for register in registrars:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    credentials = _credentials(cfg)
    try:
        if credentials is None:
            port = server.add_insecure_port(cfg.listen)
        else:
            port = server.add_secure_port(cfg.listen, credentials)
    except RuntimeError as exc:
        raise BindError(f"cannot bind gRPC listen address {cfg.listen}: {exc}") from exc
    if port == 0:
        raise BindError(f"cannot bind gRPC listen address {cfg.listen}")

    metrics_port = None
    if serve_metrics:
        metrics_port = _start_metrics(cfg)
    await server.start()
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in (*service_names, ""):
        await health_servicer.set(name, status)
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    if serving:
        log.info("gRPC %s listening on %s (port %d)", ",".join(service_names), cfg.listen, port)
    return RunningServer(server, health_servicer, service_names, port, metrics_port)


@contextlib.asynccontextmanager
async def not_serving_while_waiting(cfg: ServerConfig, service_names: tuple[str, ...]) -> AsyncIterator[RunningServer]:
    """While a service waits for a dependency: health (NOT_SERVING) and reflection on ``cfg.listen``.

    Probes see a live process that is not ready, and a bad listen address fails at once. On exit
    the server stops, freeing the address for the real one (a ``Watch`` stream then ends with
    UNAVAILABLE and is reopened against it).
    """
    running = await start_server(cfg, [], service_names, serve_metrics=False, serving=False)
    log.info(
        "gRPC health listening on %s (port %d): NOT_SERVING until the database is reachable", cfg.listen, running.port
    )
    try:
        yield running
    finally:
        await running.server.stop(0)


def _start_metrics(cfg: ServerConfig) -> int:
    host = cfg.listen.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
    try:
        httpd, _thread = start_http_server(cfg.metrics_port, addr=host)
    except OSError as exc:
        raise BindError(f"cannot bind metrics port {host}:{cfg.metrics_port}: {exc}") from exc
    return int(httpd.server_address[1])


async def wait_for_shutdown_signal() -> None:
    """Return on the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve_until_signal(running: RunningServer, grace: float) -> None:
    """Block until SIGTERM/SIGINT, then shut ``running`` down gracefully."""
    await wait_for_shutdown_signal()
    log.info("shutting down: NOT_SERVING, draining for up to %.1fs", grace)
    await running.stop(grace)
