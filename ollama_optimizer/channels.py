"""Client channels to the services: one per target, with optional TLS and bearer token.

Keepalive is set on both ends (see grpc's doc/keepalive.md): clients ping every ``KEEPALIVE.time_ms``,
also while idle, so a peer that vanished without closing the connection (failover, a dropped NAT
entry) is noticed before the next request pays for it inside its deadline; servers accept pings that
often (``server_options``) instead of answering them with GOAWAY ``too_many_pings``, and ping idle
clients themselves to drop dead connections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import grpc


@dataclass(frozen=True)
class Keepalive:
    time_ms: int = 30_000  # a client pings after this long without a ping
    timeout_ms: int = 5_000  # ... and drops the connection when the ping is not acknowledged in time
    server_time_ms: int = 60_000  # a server pings an idle client after this long
    server_timeout_ms: int = 20_000

    def client_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", self.time_ms),
            ("grpc.keepalive_timeout_ms", self.timeout_ms),
            ("grpc.http2.ping_timeout_ms", self.timeout_ms),  # also for the flow-control pings in flight
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),  # keep pinging an idle connection
        ]

    def server_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", self.server_time_ms),
            ("grpc.keepalive_timeout_ms", self.server_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            # Accept the clients' pings: at most one per half their interval (never GOAWAY too_many_pings).
            ("grpc.http2.min_ping_interval_without_data_ms", self.time_ms // 2),
        ]


KEEPALIVE = Keepalive()


class ClientArgs(TypedDict, total=False):
    """How a client authenticates: the keyword arguments of ``create_channel`` an operator configures."""

    token: str
    tls_ca: str
    tls_cert: str
    tls_key: str


def _channel_options(keepalive: Keepalive, own_connection: bool) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.lb_policy_name", "round_robin"),  # `dns:///` targets spread load over replicas
        ("grpc.enable_retries", 0),  # no retries on the request path: fail fast, pass through
        *keepalive.client_options(),
    ]
    if own_connection:  # channels with equal options share connections through the global subchannel pool
        options.append(("grpc.use_local_subchannel_pool", 1))
    return options


def _with_token(credentials: grpc.ChannelCredentials, token: str) -> grpc.ChannelCredentials:
    call_creds = grpc.access_token_call_credentials(token)
    return grpc.composite_channel_credentials(credentials, call_creds)


def create_channel(
    target: str,
    *,
    token: str = "",
    tls_ca: str = "",
    tls_cert: str = "",
    tls_key: str = "",
    own_connection: bool = False,
    keepalive: Keepalive = KEEPALIVE,
) -> grpc.aio.Channel:
    """An aio channel. TLS when a CA is given (mTLS with cert+key); the token rides as a bearer header.

    ``own_connection``: never share the connection with another channel to the same target.
    """
    options = _channel_options(keepalive, own_connection)
    if tls_ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(tls_ca).read_bytes(),
            private_key=Path(tls_key).read_bytes() if tls_key else None,
            certificate_chain=Path(tls_cert).read_bytes() if tls_cert else None,
        )
        if token:
            credentials = _with_token(credentials, token)
        return grpc.aio.secure_channel(target, credentials, options=options)
    if token:
        # Plain-text channel with a bearer token: loopback/dev only; attached per call as metadata.
        return grpc.aio.insecure_channel(target, options=options, interceptors=[_BearerMetadata(token)])
    return grpc.aio.insecure_channel(target, options=options)


class _BearerMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every unary call on an insecure channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall[Any, Any]:
        metadata = list(client_call_details.metadata or ())
        metadata.append(self._header)
        # A namedtuple at run time; the stubs declare only its fields.
        details = client_call_details._replace(metadata=metadata)  # type: ignore[attr-defined]
        return await continuation(details, request)
