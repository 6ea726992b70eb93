"""`ollama-optimizer up` tells the user when nothing answers at the gateway's upstream Ollama, and how to
start one (or the emulator) there."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import aiohttp


async def ollama_answers(base_url: str, timeout_s: float = 3.0) -> bool:
    """Whether an Ollama API (GET /api/version) answers at ``base_url``."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            async with http.get(base_url + "/api/version") as response:
                return response.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


def no_ollama_notice(base_url: str) -> str:
    """What to do when nothing answers at the gateway's upstream."""
    port = urlsplit(base_url).port or 11434
    return (
        f"nothing answers at the upstream Ollama {base_url} ($OLLAMA_HOST): the gateway answers 502 until "
        f"it does. Start Ollama there or point OLLAMA_HOST at yours; without one, run the Ollama emulator "
        f"from the repository: .venv/bin/python -m bench.ollama_sim --port {port}"
    )


async def say_if_no_ollama(upstream: str) -> None:
    """Print the notice on stderr when nothing answers at ``upstream`` (an OLLAMA_HOST form or URL)."""
    from proxy_plugin.gateway import normalise_upstream

    base_url = normalise_upstream(upstream)
    if not await ollama_answers(base_url):
        print(no_ollama_notice(base_url), file=sys.stderr, flush=True)
