"""Client channels to the services: one per target, with optional TLS and bearer token."""
from __future__ import annotations

from pathlib import Path

import grpc

# Keepalive and round_robin let `dns:///` targets spread load over matcher replicas.
_CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.enable_retries", 0),  # no retries on the request path: fail fast, pass through
]


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
) -> grpc.aio.Channel:
    """An aio channel. TLS when a CA is given (mTLS with cert+key); the token rides as a bearer header."""
    if tls_ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(tls_ca).read_bytes(),
            private_key=Path(tls_key).read_bytes() if tls_key else None,
            certificate_chain=Path(tls_cert).read_bytes() if tls_cert else None,
        )
        if token:
            credentials = _with_token(credentials, token)
        return grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
    if token:
        # Plain-text channel with a bearer token: loopback/dev only; attached per call as metadata.
        return grpc.aio.insecure_channel(
            target, options=_CHANNEL_OPTIONS, interceptors=[_BearerMetadata(token)]
        )
    return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)


class _BearerMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every unary call on an insecure channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        metadata = list(client_call_details.metadata or ())
        metadata.append(self._header)
        details = client_call_details._replace(metadata=metadata)
        return await continuation(details, request)
