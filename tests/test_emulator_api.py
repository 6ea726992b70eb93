"""The emulator driven by the official ollama client: reloads, truncation, 400s, streaming, ps, eviction."""

from __future__ import annotations

import asyncio

import aiohttp
import ollama
import pytest

from bench.ollama_sim import EmulatorConfig, start_emulator
from bench.ollama_sim.profiles import MODELS
from bench.ollama_sim.prompt import PROMPT_TOO_LONG
from bench.ollama_sim.tokens import prompt_tokens, render

FAST = dict(time_scale=1e5, keep_alive_s=-1)
LLAMA, QWEN, SMOL = "llama3.1:8b", "qwen2.5:14b", "smollm2:135m"


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i % 97}" for i in range(n))


@pytest.fixture
async def emu():
    async with start_emulator(EmulatorConfig(hardware="gpu-24gb", **FAST)) as e:
        yield e


@pytest.fixture
async def client(emu):
    return ollama.AsyncClient(host=emu.url)


async def ask(client, model=LLAMA, text="hello there", **options):
    return await client.chat(model=model, messages=[{"role": "user", "content": text}], options=options or None)


async def test_runner_option_changes_reload_sampling_options_do_not(emu, client):
    cold = await ask(client, num_ctx=2048)
    warm = await ask(
        client, num_ctx=2048, temperature=0.1, top_p=0.5, seed=7, num_predict=3, stop=["x"], num_keep=8, top_k=3
    )
    assert emu.loads[LLAMA] == 1 and emu.reloads[LLAMA] == 0
    assert cold.load_duration > 1e9 > warm.load_duration
    await ask(client, num_ctx=1024)  # smaller also reloads
    await ask(client, num_ctx=1024, num_batch=256)
    await ask(client, num_ctx=1024, num_batch=256, num_thread=2)
    assert emu.reloads[LLAMA] == 3
    assert emu.runner_options(LLAMA)["num_ctx"] == 1024 and emu.runner_options(LLAMA)["num_batch"] == 256


async def test_omitting_num_ctx_after_explicit_reloads_to_default(emu, client):
    await ask(client, num_ctx=8192)
    await ask(client)
    assert emu.reloads[LLAMA] == 1
    assert emu.runner_options(LLAMA)["num_ctx"] == 32768  # VRAM tier for 24 GiB
    await ask(client, text="again")  # auto vs auto: no reload
    assert emu.reloads[LLAMA] == 1


async def test_explicit_num_ctx_is_clamped_to_training_context(emu, client):
    await ask(client, SMOL, num_ctx=262144)
    await ask(client, SMOL, num_ctx=100000)
    assert emu.reloads[SMOL] == 0 and emu.runner_options(SMOL)["num_ctx"] == 8192
    ps = await client.ps()
    assert [(m.model, m.context_length) for m in ps.models] == [(SMOL, 8192)]


async def test_stage2_truncation_keeps_about_half_of_num_ctx(emu, client):
    # 4096/2 + 2 = 2050 without BOS (ollama #17889), one more with BOS (num_keep + 1)
    for model, expected in ((QWEN, 2050), (LLAMA, 2051)):
        r = await client.generate(model=model, prompt=words(6000), options={"num_ctx": 4096})
        assert r.prompt_eval_count == expected and r.done_reason in ("stop", "length")
    assert emu.truncated_requests == 2
    rec = emu.requests[-1]
    assert rec.truncated and rec.prompt_tokens_sent > 6000 and rec.prompt_eval_count == 2051


async def test_stage1_drops_whole_old_messages_keeping_system_and_last(emu, client):
    model = MODELS[LLAMA]
    msgs = [{"role": "system", "content": words(50, "s")}]
    for i in range(8):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": words(300, f"m{i}")})
    r = await client.chat(model=LLAMA, messages=msgs, options={"num_ctx": 1024})
    rec = emu.requests[-1]
    kept = [msgs[0], *msgs[1 + rec.messages_dropped :]]
    assert rec.messages_dropped > 0
    assert r.prompt_eval_count == prompt_tokens(render(kept, model), model) <= 1024
    assert r.prompt_eval_count < rec.prompt_tokens_sent and emu.truncated_requests == 1
    fits = await client.chat(model=LLAMA, messages=msgs[:2], options={"num_ctx": 1024})
    assert fits.prompt_eval_count == emu.requests[-1].prompt_tokens_sent and emu.truncated_requests == 1


async def test_truncate_false_and_shift_false_are_http_400(emu, client):
    body = {
        "model": LLAMA,
        "messages": [{"role": "user", "content": words(3000)}],
        "options": {"num_ctx": 1024},
        "stream": False,
    }
    with pytest.raises(ollama.ResponseError) as err:
        await client._request(ollama.ChatResponse, "POST", "/api/chat", json=body | {"truncate": False})
    assert err.value.status_code == 400 and "exceeds the available context size (1024 tokens)" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        await client._request(ollama.ChatResponse, "POST", "/api/chat", json=body | {"shift": False})
    assert err.value.status_code == 400 and err.value.error == PROMPT_TOO_LONG
    ok = await client._request(
        ollama.ChatResponse,
        "POST",
        "/api/chat",
        json=body | {"messages": [{"role": "user", "content": "short"}], "shift": False},
    )
    assert ok.done and emu.truncated_requests == 0
    assert emu.reloads[LLAMA] == 1  # the shift flag is a launch option: flipping it reloaded once


async def test_streaming_shape_and_final_counts(emu, client):
    msgs = [{"role": "user", "content": "stream me something"}]
    chunks = [c async for c in await client.chat(model=LLAMA, messages=msgs, stream=True)]
    *parts, final = chunks
    assert all(not c.done and c.eval_count is None and c.message.content for c in parts)
    assert final.done and final.message.content == "" and final.done_reason == "stop"
    assert final.eval_count == len(parts) and final.prompt_eval_count > 0
    assert final.total_duration >= final.load_duration + final.prompt_eval_duration + final.eval_duration
    whole = await client.chat(model=LLAMA, messages=msgs)
    assert whole.message.content == "".join(c.message.content for c in parts)
    assert whole.eval_count == final.eval_count
    capped = [c async for c in await client.generate(model=LLAMA, prompt="x", stream=True, options={"num_predict": 3})]
    assert [c.done for c in capped] == [False] * 3 + [True] and capped[-1].done_reason == "length"


async def test_ps_tags_show_version(emu, client):
    assert {m.model for m in (await client.list()).models} == set(MODELS)
    show = await client.show(QWEN)
    assert show.modelinfo["qwen2.context_length"] == 32768 and show.details.family == "qwen2"
    await ask(client, num_ctx=3000)
    (m,) = (await client.ps()).models
    assert m.model == LLAMA and m.context_length == 3000 and m.size_vram == m.size > 4.9e9
    assert (await client._request_raw("GET", "/api/version")).json()["version"]
    with pytest.raises(ollama.ResponseError) as err:
        await ask(client, "no-such-model")
    assert err.value.status_code == 404


async def test_eviction_and_spill_when_memory_is_short():
    async with start_emulator(EmulatorConfig(hardware="gpu-8gb", **FAST)) as emu:
        client = ollama.AsyncClient(host=emu.url)
        await ask(client, LLAMA, num_ctx=4096)
        await ask(client, "llama3.2:3b", num_ctx=4096)
        assert emu.evictions[LLAMA] == 1
        assert [m.model for m in (await client.ps()).models] == ["llama3.2:3b"]
        await ask(client, QWEN, num_ctx=4096)  # 9 GB of weights on an 8 GiB card: partial offload
        (m,) = (await client.ps()).models
        assert m.size_vram < m.size and emu.runner_options(QWEN)["gpu_layers"] < 48


async def test_in_flight_requests_finish_before_reload(emu, client):
    first, second = await asyncio.gather(ask(client, num_ctx=2048, text="one"), ask(client, num_ctx=4096, text="two"))
    a, b = sorted(emu.requests, key=lambda r: r.arrival_s)
    assert emu.reloads[LLAMA] == 1 and first.done and second.done
    assert b.arrival_s + b.load_s >= a.arrival_s + a.total_s  # b's runner came up after a finished


async def test_memory_counters_follow_the_kv_formula(emu, client):
    await ask(client, num_ctx=8192)
    kv = 2 * 32 * 8 * 128 * 8192 * 2
    assert emu.kv_bytes(LLAMA) == emu.kv_bytes() == kv
    await ask(client, num_ctx=2048)
    stats = emu.memory_stats()
    assert stats["kv_peak_bytes"] == kv and kv / 4 <= stats["kv_mean_bytes"] <= kv
    assert emu.summary()["reloads"] == 1 and emu.summary()["requests"] == 2


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (
            "/api/chat",
            {"model": LLAMA, "messages": 1.5},
            "json: cannot unmarshal number into Go struct field ChatRequest.messages of type []api.Message",
        ),
        (
            "/api/chat",
            {"model": LLAMA, "messages": [{"role": "user", "content": 7}]},
            "json: cannot unmarshal number into Go struct field Message.messages.content of type string",
        ),
        (
            "/api/generate",
            {"model": LLAMA, "prompt": "hi", "stream": 1},
            "json: cannot unmarshal number into Go struct field GenerateRequest.stream of type bool",
        ),
        (
            "/api/generate",
            {"model": LLAMA, "prompt": "hi", "options": []},
            "json: cannot unmarshal array into Go struct field GenerateRequest.options of type map[string]interface {}",
        ),
        ("/api/chat", [1, 2], "json: cannot unmarshal array into Go value of type api.ChatRequest"),
    ],
)
async def test_wrongly_typed_fields_are_http_400_as_in_ollama(emu, path, body, error):
    async with aiohttp.ClientSession() as session, session.post(emu.url + path, json=body) as response:
        assert response.status == 400 and (await response.json()) == {"error": error}
    assert emu.requests == []  # rejected before scheduling: nothing ran


async def test_null_fields_are_zero_values(emu, client):
    body = {
        "model": LLAMA,
        "messages": [{"role": "user", "content": "hi"}],
        "options": None,
        "stream": False,
        "keep_alive": None,
    }
    reply = await client._request(ollama.ChatResponse, "POST", "/api/chat", json=body)
    assert reply.done
