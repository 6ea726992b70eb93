"""`ollama-optimizer health ADDRESS`: a grpc.health.v1 check with grpc_health_probe exit codes."""

from __future__ import annotations

import asyncio
from typing import Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .channels import ClientArgs, create_channel
from .config import env_secret, env_str

EXIT_SERVING = 0
EXIT_INVALID_ARGUMENTS = 1
EXIT_CONNECTION_FAILURE = 2
EXIT_RPC_FAILURE = 3
EXIT_UNHEALTHY = 4


def client_args_from_env() -> ClientArgs:
    """The client token and TLS files of the CLI's admin commands (OPTIMIZER_AUTH_TOKEN, OPTIMIZER_CLIENT_TLS_*)."""
    return {
        "token": env_secret("OPTIMIZER_AUTH_TOKEN"),
        "tls_ca": env_str("OPTIMIZER_CLIENT_TLS_CA", ""),
        "tls_cert": env_str("OPTIMIZER_CLIENT_TLS_CERT", ""),
        "tls_key": env_str("OPTIMIZER_CLIENT_TLS_KEY", ""),
    }


async def check(
    address: str, service: str = "", timeout: float = 2.0, **channel_args: Unpack[ClientArgs]
) -> tuple[int, str]:
    """Return (exit code, message) for one health check."""
    if not address or ":" not in address:
        return EXIT_INVALID_ARGUMENTS, f"invalid address {address!r}: expected HOST:PORT"
    channel = create_channel(address, **channel_args)
    try:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except TimeoutError:
            return EXIT_CONNECTION_FAILURE, f"timeout: failed to connect to {address} within {timeout}s"
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            # types-grpcio-health-checking declares HealthStub without its methods.
            reply: health_pb2.HealthCheckResponse = await stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            return EXIT_RPC_FAILURE, f"health rpc failed: {exc.code().name}: {exc.details()}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return EXIT_UNHEALTHY, f"service unhealthy (responded with {status})"
        return EXIT_SERVING, "status: SERVING"
    finally:
        await channel.close()
