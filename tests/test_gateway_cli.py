"""`ollama-optimizer gateway` as a process: serves, relays, and exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp

from bench.ollama_sim import EmulatorConfig, start_emulator
from bench.ports import free_port


async def _line_with(stream: asyncio.StreamReader, text: str) -> bool:
    """Read ``stream`` up to a line containing ``text`` (False: it ended first)."""
    while line := await stream.readline():
        if text in line.decode():
            return True
    return False


async def test_gateway_process_relays_and_stops_gracefully() -> None:
    async with start_emulator(EmulatorConfig(time_scale=1000)) as emu:
        port, metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "GATEWAY_METRICS_PORT": str(metrics_port),
            "OPT_MATCHER_ADDRESS": "127.0.0.1:1",
            "OPT_TUNER_ADDRESS": "127.0.0.1:1",
        }
        upstream = emu.url.removeprefix("http://")  # the OLLAMA_HOST form
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ollama_optimizer.cli",
            "gateway",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            said = await asyncio.wait_for(_line_with(proc.stderr, f"gateway http://127.0.0.1:{port} -> "), 90)
            assert said, f"the gateway exited with {await proc.wait()} before saying it listens"
            rest = asyncio.ensure_future(proc.stderr.read())  # drained: a full pipe would block the gateway
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://127.0.0.1:{port}/api/generate",
                    json={"model": "smollm2:135m", "prompt": "hi", "stream": False},
                ) as response:
                    assert response.status == 200 and (await response.json())["done"]
                async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                    assert "optimizer_plugin_passthrough_total" in await response.text()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0, (await rest).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
