"""During an outage every request carries the runner options the model's last request carried: Ollama never
reloads because the optimizer failed, however long the outage, and also in a gateway replica started
during it (the context Ollama reports in /api/ps). Time is an injected clock."""

from __future__ import annotations

import json

import aiohttp
import ollama

from proxy_plugin.core import OptimizerCore

from plugin_fixtures import gateway_chain, plugin_config, stand_ins

MODEL = "smollm2:135m"
DEAD = "127.0.0.1:1"  # nothing listens on port 1
APPLIED = {"num_ctx": 8192, "num_batch": 256}  # what the stand-in tuner recommends
STATS = {"done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chat(text: str, **options: int) -> dict:
    request: dict = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    if options:
        request["options"] = options
    return request


async def test_an_outage_of_any_length_keeps_the_applied_options() -> None:
    clock = Clock()
    async with stand_ins() as services:
        core = OptimizerCore(services.config(breaker_threshold=1, breaker_cooldown_s=30, sticky_ttl_s=300), clock=clock)
        sent, decision = await core.prepare(chat("hello there"))
        assert decision.applied and sent["options"] == APPLIED
        await services.stop()
        for _ in range(36):  # three hours, a request every five minutes (each just inside the lifetime)
            clock.now += 299
            sent, decision = await core.prepare(chat("hello again"))
            assert sent["options"] == APPLIED and decision.reason == "sticky"
            core.observe(sent, STATS, decision)
        await core.close(0.1)


async def test_an_outage_sends_what_the_last_request_carried() -> None:
    """The client's own options, or none: a model last sent bare stays bare (no reload to the old options)."""
    clock = Clock()
    async with stand_ins() as services:
        core = OptimizerCore(services.config(breaker_threshold=1, breaker_cooldown_s=3600), clock=clock)
        sent, decision = await core.prepare(chat("hello there"))
        assert decision.applied
        own = chat("mine", num_ctx=2048, num_batch=128)
        sent, decision = await core.prepare(own)
        assert sent is own and decision.reason == "client_options"
        core.observe(sent, STATS, decision)  # Ollama answered it: the runner now has the client's options
        await services.stop()
        sent, decision = await core.prepare(chat("bare"))
        assert sent["options"] == {"num_ctx": 2048, "num_batch": 128} and decision.reason == "sticky"
        await core.close(0.1)


async def test_a_model_idle_beyond_the_lifetime_passes_through() -> None:
    """Ollama unloaded it meanwhile (keep_alive): any options cost the same load, the request goes as sent."""
    clock = Clock()
    async with stand_ins() as services:
        core = OptimizerCore(
            services.config(breaker_threshold=1, breaker_cooldown_s=3600, sticky_ttl_s=300), clock=clock
        )
        assert (await core.prepare(chat("hello there")))[1].applied
        await services.stop()
        clock.now += 301
        request = chat("later")
        sent, decision = await core.prepare(request)
        assert sent is request and not decision.applied
        await core.close(0.1)


def last_chat(tap) -> bytes:  # type: ignore[no-untyped-def]
    """The body of the last /api/chat the tap relayed (the gateway also asks /api/ps through it)."""
    return [body for path, body in tap.bodies if path == "/api/chat"][-1]


async def _load_directly(url: str, options: dict) -> None:
    """Another replica's request: Ollama loads the model with ``options`` and keeps it for an hour."""
    async with aiohttp.ClientSession() as http:
        body = {"model": MODEL, "prompt": "hi", "stream": False, "options": options, "keep_alive": "1h"}
        async with http.post(url + "/api/generate", json=body) as response:
            assert response.status == 200


async def test_a_replica_started_during_an_outage_keeps_the_loaded_context() -> None:
    async with gateway_chain(plugin_config(DEAD, DEAD, breaker_threshold=1)) as (gw, tap, emu):
        await _load_directly(emu.url, {"num_ctx": 8192})
        client = ollama.AsyncClient(host=gw.url)
        for text in ("first", "second"):  # a failed Match, then an open breaker
            reply = await client.chat(**chat(text), keep_alive="1h")
            assert reply.done
            assert json.loads(last_chat(tap))["options"] == {"num_ctx": 8192}
        assert emu.reloads[MODEL] == 0


async def test_a_model_ollama_has_not_loaded_passes_through_byte_identical() -> None:
    async with gateway_chain(plugin_config(DEAD, DEAD, breaker_threshold=1)) as (gw, tap, _emu):
        async with aiohttp.ClientSession() as http:
            body = json.dumps(chat("first")).encode()
            async with http.post(gw.url + "/api/chat", data=body) as response:
                assert response.status == 200
        assert last_chat(tap) == body
