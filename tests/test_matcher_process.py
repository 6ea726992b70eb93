"""`ollama-optimizer matcher` as a subprocess: health SERVING, CLI round trip, metrics (the compiled
fingerprint kernel among them), SIGTERM → NOT_SERVING → exit 0."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.ports import free_port
from matcher_service.admin_cli import match, templates
from matcher_service.service import SERVICE_NAME

from matcher_fixtures import prompt


async def test_matcher_process_serves_and_drains_on_sigterm(dsn, capsys) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "OPTIMIZER_DSN": dsn,
        "MATCHER_LISTEN": f"127.0.0.1:{port}",
        "MATCHER_METRICS_PORT": str(metrics_port),
        "OPTIMIZER_SHUTDOWN_GRACE_SECONDS": "1",
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ollama_optimizer.cli", "matcher", env=env)
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), wait_for_ready=True, timeout=60
            )
            statuses = aiter(watch)
            while (await anext(statuses)).status != health_pb2.HealthCheckResponse.SERVING:
                pass
            capsys.readouterr()
            args = argparse.Namespace(address=address, model="llama3.1:8b", observe=True, json=True)
            assert await match(args, prompt(1, 200)) == 0
            matched = json.loads(capsys.readouterr().out)
            assert matched["match"]["matched"] is False and matched["observe"]["created"] is True
            assert await templates(argparse.Namespace(address=address, limit=5, after_id=0, json=True)) == 0
            listed = json.loads(capsys.readouterr().out)["templates"]
            assert [t["template_id"] for t in listed] == [matched["observe"]["template_id"]]
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
            )
            assert b'optimizer_matcher_observes_total{result="created"} 1.0' in body
            assert b"grpc_server_handled_total" in body
            assert b'optimizer_fingerprint_kernel{kernel="compiled"} 1.0' in body  # compiled before serving

            proc.send_signal(signal.SIGTERM)
            after = []
            try:
                async for response in statuses:
                    after.append(response.status)
            except grpc.aio.AioRpcError as exc:  # the stream ends when the server stops
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)  # noqa: PT017
            assert after[:1] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
