"""Waiting on grpc.health.v1 Watch streams (import explicitly): the server pushes each status change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WATCH_BOUND_SECONDS = 90.0  # a failure bound for a busy host, never a timing assertion


async def _watch(stub: health_pb2_grpc.HealthStub, address: str, name: str, status: int) -> None:
    """Until ``name`` reports ``status``. Waits for the server to listen (wait_for_ready), and reopens the stream
    when it ends with UNAVAILABLE: a service's stand-in health server stops when the real one takes its port."""
    deadline = asyncio.get_running_loop().time() + WATCH_BOUND_SECONDS
    seen: list[int] = []
    while True:
        left = deadline - asyncio.get_running_loop().time()
        request = health_pb2.HealthCheckRequest(service=name)
        call = stub.Watch(request, timeout=max(left, 0.0), wait_for_ready=True)
        try:
            async for response in call:
                seen.append(response.status)
                if response.status == status:
                    return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or left <= 0:
                raise AssertionError(f"{address} {name!r} never became {status} (saw {seen}): {exc.code()}") from exc
        finally:
            call.cancel()
        if left <= 0:
            raise AssertionError(f"{address} {name!r}: the Watch stream ended before {status} (saw {seen})")


async def reach(address: str, expected: dict[str, int], exited: Awaitable[str] | None = None) -> None:
    """Wait on a health Watch stream per name until each shows its expected status; with ``exited`` (resolving
    to a description of a process's exit), fail as soon as that process ends first."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = asyncio.ensure_future(asyncio.gather(*(_watch(stub, address, n, s) for n, s in expected.items())))
        if exited is None:
            await watches
            return
        ended = asyncio.ensure_future(exited)
        try:
            await asyncio.wait((watches, ended), return_when=asyncio.FIRST_COMPLETED)
            if not watches.done():
                raise AssertionError(f"{address}: {ended.result()} before {expected}")
            await watches
        finally:
            for task in (watches, ended):
                task.cancel()
            await asyncio.gather(watches, ended, return_exceptions=True)
