"""The gateway never proxies to itself: an upstream that is its own address is refused at start (one line,
exit 2), and a loop through other gateways is answered 508 Loop Detected with JSON at once."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import pytest

from bench.ollama_sim import EmulatorConfig, start_emulator
from bench.ports import free_port
from proxy_plugin.gateway import start_gateway
from proxy_plugin.loop_guard import HOP_HEADER, SelfUpstream, check_upstream

OFFLINE_RPC = {"OPT_MATCHER_ADDRESS": "127.0.0.1:1", "OPT_TUNER_ADDRESS": "127.0.0.1:1"}


@pytest.mark.parametrize(
    ("listen_host", "upstream"),
    [
        ("127.0.0.1", "http://127.0.0.1:{port}"),
        ("127.0.0.1", "http://localhost:{port}"),
        ("0.0.0.0", "http://127.0.0.1:{port}"),
        ("localhost", "http://127.0.0.1:{port}"),
    ],
)
def test_own_address_as_upstream_is_refused(listen_host: str, upstream: str) -> None:
    with pytest.raises(SelfUpstream, match="proxy to itself"):
        check_upstream(listen_host, 11435, upstream.format(port=11435))


def test_another_port_is_an_upstream() -> None:
    check_upstream("127.0.0.1", 11435, "http://127.0.0.1:11434")


async def test_gateway_started_with_ollama_host_set_to_itself_exits_with_one_line() -> None:
    port = free_port()
    env = {
        **os.environ,
        **OFFLINE_RPC,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_METRICS_PORT": str(free_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ollama_optimizer.cli",
        "gateway",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 2
    text = output.decode()
    assert "would proxy to itself" in text and "Traceback" not in text


async def test_a_loop_through_two_gateways_is_508_and_a_chain_works(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in OFFLINE_RPC.items():
        monkeypatch.setenv(name, value)
    port_a, port_b = free_port(), free_port()
    a = await start_gateway(f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}")
    b = await start_gateway(f"127.0.0.1:{port_b}", f"127.0.0.1:{port_a}")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:  # a loop never answers
            async with http.get(f"{a.url}/api/tags") as response:
                assert response.status == 508
                assert "loop detected" in (await response.json())["error"]
    finally:
        await a.stop(0)
        await b.stop(0)

    async with start_emulator(EmulatorConfig(time_scale=1000)) as emu:
        b = await start_gateway("127.0.0.1:0", emu.url)
        a = await start_gateway("127.0.0.1:0", b.url)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{a.url}/api/tags") as response:
                    assert response.status == 200
                async with http.get(f"{b.url}/api/tags", headers={HOP_HEADER: a.gateway.hops.gateway_id}) as response:
                    assert response.status == 200  # another gateway's id: a chain, not a loop
                async with http.get(f"{a.url}/api/tags", headers={HOP_HEADER: a.gateway.hops.gateway_id}) as response:
                    assert response.status == 508
        finally:
            await a.stop(0)
            await b.stop(0)
