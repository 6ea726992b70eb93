"""The gateway with stand-in services in front of the emulator, driven by the official ollama client."""

from __future__ import annotations

import json

import aiohttp
import ollama
import pytest

from proxy_plugin.gateway import normalise_upstream

from plugin_fixtures import RecordingTap, gateway_chain, plugin_config, sample, stand_ins, wait_until

MODEL = "smollm2:135m"
MESSAGES = [{"role": "system", "content": "You answer tersely."}, {"role": "user", "content": "Summarise: a b c."}]
DEAD = "127.0.0.1:1"


def test_normalise_upstream() -> None:
    assert normalise_upstream("127.0.0.1:11434") == "http://127.0.0.1:11434"
    assert normalise_upstream("localhost") == "http://localhost:11434"
    assert normalise_upstream(":11434") == "http://127.0.0.1:11434"
    assert normalise_upstream("https://ollama.example/") == "https://ollama.example:443"
    assert normalise_upstream("http://[::1]:8080") == "http://[::1]:8080"


async def _reference_body(request) -> bytes:
    """What the official client sends for ``request`` (recorded by a tap with no upstream: nothing is loaded)."""
    tap = await RecordingTap("http://" + DEAD).start()
    try:
        with pytest.raises(ollama.ResponseError):
            await ollama.AsyncClient(host=tap.url).chat(**request)
        return tap.bodies[-1][1]
    finally:
        await tap.stop()


async def test_options_applied_streaming_and_learning_from_final_chunk() -> None:
    async with stand_ins() as services, gateway_chain(services.config()) as (gw, tap, emu):
        client = ollama.AsyncClient(host=gw.url)
        reply = await client.chat(model=MODEL, messages=MESSAGES)
        assert reply.done and reply.message.content
        assert emu.requests[-1].options == {"num_ctx": 8192, "num_batch": 256}

        parts = [part async for part in await client.chat(model=MODEL, messages=MESSAGES, stream=True)]
        assert len(parts) > 2 and parts[-1].done and not parts[0].done
        assert json.loads(tap.bodies[-1][1])["options"]["num_ctx"] == 8192
        await gw.gateway.flush()
        streamed = services.tuner.outcomes[-1]
        assert streamed.counts_known and streamed.eval_count == parts[-1].eval_count == emu.requests[-1].eval_count
        assert streamed.prompt_eval_count == emu.requests[-1].prompt_eval_count
        assert streamed.decision_id and streamed.num_ctx == 8192 and streamed.ttft_seconds > 0
        assert len(services.matcher.observed) == 2

        generated = await client.generate(model=MODEL, prompt="Why is the sky blue?")
        assert generated.done and emu.requests[-1].endpoint == "generate"
        assert emu.requests[-1].options["num_ctx"] == 8192


@pytest.mark.parametrize("mode", ["killed", "slow"])
async def test_passthrough_is_byte_identical_when_services_fail(mode: str) -> None:
    async with stand_ins(hang_matcher=mode == "slow") as services:
        if mode == "killed":
            await services.stop()
        cfg = services.config(
            budget_ms=40,
            call_timeout_ms=20,
            breaker_threshold=2,
            breaker_cooldown_s=3600,
            learning_breaker_cooldown_s=3600,
        )
        async with gateway_chain(cfg) as (gw, tap, emu):
            client = ollama.AsyncClient(host=gw.url)
            request = {"model": MODEL, "messages": MESSAGES, "options": {"temperature": 0.1}}
            reference = await _reference_body(request)
            for _ in range(3):
                reply = await client.chat(**request)
                assert reply.done
                assert tap.bodies[-1][1] == reference
            assert gw.gateway.core.breaker_states()["matcher"] == "open"
            assert emu.requests[-1].options == {"temperature": 0.1}
            parts = [p async for p in await client.chat(**request, stream=True)]
            assert parts[-1].done


async def test_other_endpoints_errors_and_limits() -> None:
    async with gateway_chain(plugin_config(DEAD, DEAD, max_body_bytes=4096)) as (gw, tap, _emu):
        client = ollama.AsyncClient(host=gw.url)
        assert next(m.model for m in (await client.list()).models) == MODEL
        with pytest.raises(ollama.ResponseError) as missing:
            await client.chat(model="no-such-model", messages=MESSAGES)
        assert missing.value.status_code == 404  # relayed as Ollama sends it
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url + "/api/chat", data=b"{not json") as response:
                assert response.status == 400 and tap.bodies[-1][1] == b"{not json"  # Ollama answered
            async with http.post(gw.url + "/api/generate", data=b"x" * 5000) as response:
                assert response.status == 413 and "error" in await response.json()
            async with http.get(gw.url + "/api/ps") as response:
                assert response.status == 200 and "models" in await response.json()
            async with http.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as response:
                text = await response.text()
        assert "optimizer_gateway_request_duration_seconds_bucket" in text
        assert "optimizer_plugin_passthrough_total" in text


async def test_bodies_above_what_is_optimized_pass_through_untouched() -> None:
    """Ollama takes a chat/generate body of any size: above 32 MiB the gateway relays the exact bytes
    (not a 413) and counts them; a body sent without Content-Length (chunked) too."""
    large = json.dumps({"model": MODEL, "prompt": "x" * (33 << 20), "stream": False}).encode()
    before = sample("optimizer_plugin_passthrough_total", reason="large_body")
    async with gateway_chain(plugin_config(DEAD, DEAD)) as (gw, tap, emu), aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/api/generate", data=large) as response:
            assert response.status == 200 and (await response.json())["done"]
        assert tap.bodies[-1] == ("/api/generate", large)

    async def chunked(body: bytes):  # type: ignore[no-untyped-def]
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    small_cap = plugin_config(DEAD, DEAD, optimize_max_body_bytes=4096)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "y" * 6000}], "stream": False}).encode()
    async with gateway_chain(small_cap) as (gw, tap, emu), aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/api/chat", data=chunked(body)) as response:
            assert response.status == 200 and (await response.json())["done"]
        assert tap.bodies[-1] == ("/api/chat", body)
        assert emu.requests[-1].options == {}
    assert sample("optimizer_plugin_passthrough_total", reason="large_body") == before + 2


async def test_compatible_bodies_above_what_is_optimized_pass_through_untouched() -> None:
    """A /v1 body above what is optimized reaches Ollama's own /v1 endpoint as the client's exact bytes, with
    or without Content-Length, counted; under an operator's limit a larger one is a 413 in the door's format,
    and one between what is optimized and that limit still passes through."""

    async def chunked(body: bytes):  # type: ignore[no-untyped-def]
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "y" * 6000}]}).encode()
    before = sample("optimizer_plugin_passthrough_total", reason="large_body")
    small_cap = plugin_config(DEAD, DEAD, optimize_max_body_bytes=4096)
    async with gateway_chain(small_cap) as (gw, tap, _emu), aiohttp.ClientSession() as http:
        for data in (body, chunked(body)):
            async with http.post(gw.url + "/v1/chat/completions", data=data) as response:
                assert response.status == 200 and (await response.json())["object"] == "chat.completion"
            assert tap.bodies[-1] == ("/v1/chat/completions", body)
    assert sample("optimizer_plugin_passthrough_total", reason="large_body") == before + 2

    limited = plugin_config(DEAD, DEAD, optimize_max_body_bytes=4096, max_body_bytes=8192)
    larger = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "z" * 9000}]}).encode()
    async with gateway_chain(limited) as (gw, tap, _emu), aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", data=body) as response:
            assert response.status == 200 and tap.bodies[-1] == ("/v1/chat/completions", body)
        for data in (larger, chunked(larger)):
            async with http.post(gw.url + "/v1/chat/completions", data=data) as response:
                answer = await response.json()
                assert response.status == 413 and "larger than 8192 bytes" in answer["error"]["message"]
        async with http.post(gw.url + "/api/chat", data=body) as response:  # the native door likewise
            assert response.status == 200 and tap.bodies[-1] == ("/api/chat", body)
    assert sample("optimizer_plugin_passthrough_total", reason="large_body") == before + 4


async def test_upstream_down_is_502() -> None:
    from proxy_plugin.core import OptimizerCore
    from proxy_plugin.gateway import start_gateway

    running = await start_gateway("127.0.0.1:0", DEAD, core=OptimizerCore(plugin_config(DEAD, DEAD)))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(running.url + "/api/chat", json={"model": MODEL, "messages": MESSAGES}) as r:
                assert r.status == 502 and "unreachable" in (await r.json())["error"]
    finally:
        await running.stop()


async def test_gateway_metrics_and_client_disconnect() -> None:
    async with stand_ins() as services, gateway_chain(services.config(), time_scale=1.0) as (gw, _tap, _emu):
        before = sample("optimizer_gateway_client_disconnects_total", endpoint="chat")
        async with aiohttp.ClientSession() as http:
            response = await http.post(gw.url + "/api/chat", json={"model": MODEL, "messages": MESSAGES})
            await response.content.readline()  # the first streamed chunk is through
            response.close()  # the client goes away mid-stream
        await wait_until(lambda: sample("optimizer_gateway_client_disconnects_total", endpoint="chat") == before + 1)


async def test_gateway_connects_to_the_services_at_start_up() -> None:
    """The first request finds both channels ready: the handshake is not paid inside its deadline."""
    async with stand_ins() as services, gateway_chain(services.config()) as (gw, _tap, _emu):
        await wait_until(lambda: gw.gateway.core.channel_states() == {"matcher": "ready", "tuner": "ready"})
        assert services.matcher.matches == 0  # connected before any request


async def test_command_mode_optimizes_only_opt_requests() -> None:
    async with stand_ins() as services, gateway_chain(services.config(always_on=False)) as (gw, tap, _emu):
        client = ollama.AsyncClient(host=gw.url)
        await client.chat(model=MODEL, messages=MESSAGES)
        assert "options" not in json.loads(tap.bodies[-1][1])
        await client.generate(model=MODEL, prompt="/opt Why is the sky blue?")
        sent = json.loads(tap.bodies[-1][1])
        assert sent["prompt"] == "Why is the sky blue?" and sent["options"]["num_ctx"] == 8192
