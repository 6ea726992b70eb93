"""`ollama-optimizer health ADDRESS`: a grpc.health.v1 check with grpc_health_probe exit codes."""

from __future__ import annotations

import asyncio
import os
from typing import Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .channels import ClientArgs, create_channel
from .config import ClientSettings
from .settings_env import load

EXIT_SERVING = 0
EXIT_INVALID_ARGUMENTS = 1
EXIT_CONNECTION_FAILURE = 2
EXIT_RPC_FAILURE = 3
EXIT_UNHEALTHY = 4


def client_args_from_env() -> ClientArgs:
    """The client token and TLS files of the CLI's admin commands (OPTIMIZER_AUTH_TOKEN, OPTIMIZER_CLIENT_TLS_*)."""
    client = load(ClientSettings, os.environ)
    return {"token": client.auth_token, "tls_ca": client.tls_ca, "tls_cert": client.tls_cert, "tls_key": client.tls_key}


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
