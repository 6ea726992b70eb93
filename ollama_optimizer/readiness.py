"""What `ollama-optimizer up` checks before it says the system is up: every service accepts connections,
and something answers at the gateway's upstream Ollama address."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

LISTEN_TIMEOUT_SECONDS = 120.0  # the services wait up to OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS (60) for Postgres
_RETRY_SECONDS = 0.1


async def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        _reader, writer = await asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port))
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def wait_until_listening(addresses: Mapping[str, str], children: Mapping[str, asyncio.subprocess.Process],
                               timeout_s: float = LISTEN_TIMEOUT_SECONDS) -> list[str]:
    """Wait until each named HOST:PORT accepts TCP connections; stop early when a child exits.

    Returns the names that are not listening (empty: all are)."""
    waiting = dict(addresses)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        if any(proc.returncode is not None for proc in children.values()):
            break
        for name, address in list(waiting.items()):
            if await _accepts(address):
                del waiting[name]
        if waiting:
            await asyncio.sleep(_RETRY_SECONDS)
    return sorted(waiting)


async def ollama_answers(base_url: str, timeout_s: float = 3.0) -> bool:
    """Whether an Ollama API (GET /api/version) answers at ``base_url``."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            async with http.get(base_url + "/api/version") as response:
                return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


def no_ollama_notice(base_url: str) -> str:
    """What to do when nothing answers at the gateway's upstream."""
    port = urlsplit(base_url).port or 11434
    return (f"nothing answers at the upstream Ollama {base_url} ($OLLAMA_HOST): the gateway answers 502 until "
            f"it does. Start Ollama there or point OLLAMA_HOST at yours; without one, run the Ollama emulator "
            f"from the repository: .venv/bin/python -m bench.ollama_sim --port {port}")
