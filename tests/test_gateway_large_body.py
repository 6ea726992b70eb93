"""A body the gateway adds runner options to is forwarded as the client's bytes plus the options (the prompt
is not encoded again), unless the client sent options of its own."""

from __future__ import annotations

import json

import aiohttp

from plugin_fixtures import gateway_chain, stand_ins

MODEL = "smollm2:135m"
LARGE = "Größe — мир, 東京. " * 20_000


async def _post(url: str, payload: dict) -> bytes:
    body = json.dumps(payload, ensure_ascii=False).encode()
    async with aiohttp.ClientSession() as session, session.post(f"{url}/api/chat", data=body) as response:
        assert response.status == 200
        await response.read()
    return body


def _chat_body(tap) -> bytes:
    return next(body for path, body in reversed(tap.bodies) if path == "/api/chat")


async def test_options_are_appended_to_the_clients_bytes() -> None:
    async with stand_ins() as services, gateway_chain(services.config()) as (gw, tap, emu):
        sent = await _post(gw.url, {"model": MODEL, "stream": False, "messages": [{"role": "user", "content": LARGE}]})
        forwarded = _chat_body(tap)
        assert forwarded.startswith(sent[:-1]) and forwarded.endswith(b'"options":{"num_ctx":8192,"num_batch":256}}')
        assert json.loads(forwarded)["messages"][0]["content"] == LARGE
        assert emu.requests[-1].options == {"num_ctx": 8192, "num_batch": 256}

        await _post(
            gw.url,
            {
                "model": MODEL,
                "stream": False,
                "options": {"temperature": 0.5},
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        merged = json.loads(_chat_body(tap))
        assert merged["options"] == {"temperature": 0.5, "num_ctx": 8192, "num_batch": 256}
        assert _chat_body(tap).count(b'"options"') == 1
