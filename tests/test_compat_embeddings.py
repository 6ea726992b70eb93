"""Embedding inputs: Ollama cuts each /api/embed input to the context silently (HTTP 200, a lower
prompt_eval_count) unless ``truncate`` is false; the gateway sizes the context so that nothing is cut,
for /api/embed and for /v1/embeddings alike."""

from __future__ import annotations

import aiohttp
import ollama
import openai

from bench.ollama_sim import MODELS, EmulatorConfig, start_emulator, token_count

from plugin_fixtures import StandInTuner, gateway_chain, stand_ins

MODEL = "llama3.2:3b"
DEFAULT_CTX = 2048
LONG = " ".join(f"word{i % 97}" for i in range(3000))  # well over 2048 tokens
SHORT = "a short passage"


def _tokens(text: str) -> int:
    model = MODELS[MODEL]
    return model.bos_tokens + token_count(text, model)


async def test_ollama_cuts_long_inputs_silently_unless_truncate_is_false() -> None:
    async with start_emulator(EmulatorConfig(default_num_ctx=DEFAULT_CTX, time_scale=1000)) as emu:
        client = ollama.AsyncClient(host=emu.url)
        cut = await client.embed(model=MODEL, input=[LONG, SHORT])
        assert len(cut.embeddings) == 2 and len(cut.embeddings[0]) == MODELS[MODEL].hidden
        assert cut.prompt_eval_count == DEFAULT_CTX + _tokens(SHORT) < _tokens(LONG) + _tokens(SHORT)
        assert emu.truncated_requests == 1
        async with aiohttp.ClientSession() as session:
            body = {"model": MODEL, "input": LONG, "truncate": False}
            async with session.post(emu.url + "/api/embed", json=body) as response:
                assert response.status == 400
                assert await response.json() == {"error": "the input length exceeds the context length"}
            async with session.post(emu.url + "/api/embed", json={"model": MODEL, "input": [1]}) as response:
                assert response.status == 400 and (await response.json())["error"] == "invalid input type"
        small = await client.embed(model=MODEL, input=SHORT, dimensions=8)
        assert len(small.embeddings[0]) == 8 and abs(sum(v * v for v in small.embeddings[0]) - 1) < 1e-6


async def test_gateway_sizes_the_context_so_no_embedding_input_is_cut() -> None:
    tuner = StandInTuner(num_ctx=8192, num_batch=512)
    async with (
        stand_ins(tuner=tuner) as services,
        gateway_chain(services.config(), default_num_ctx=DEFAULT_CTX) as (gw, _tap, emu),
    ):
        native = await ollama.AsyncClient(host=gw.url).embed(model=MODEL, input=[LONG, SHORT])
        assert native.prompt_eval_count == _tokens(LONG) + _tokens(SHORT)
        assert emu.requests[-1].runner["num_ctx"] == 8192 and emu.truncated_requests == 0
        await gw.gateway.flush()  # a load's outcome waits for /api/ps: queued before the next one's

        via = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        direct = openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0)
        ours = await via.embeddings.create(model=MODEL, input=LONG)
        assert ours.usage.prompt_tokens == _tokens(LONG) and emu.truncated_requests == 0
        theirs = await direct.embeddings.create(model=MODEL, input=LONG)  # Ollama's own /v1: default context
        assert theirs.usage.prompt_tokens == DEFAULT_CTX and emu.truncated_requests == 1
        assert ours.data[0].embedding != theirs.data[0].embedding  # the cut input embeds differently

        await gw.gateway.flush()
        outcomes = services.tuner.outcomes
        assert [o.prompt_eval_count for o in outcomes] == [native.prompt_eval_count, ours.usage.prompt_tokens]
        assert all(o.counts_known and o.num_ctx == 8192 for o in outcomes)
