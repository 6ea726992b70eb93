"""The gateway reads its Ollama's version and each model's trained context and KV size, and forwards them with
the cached prompt count to the tuner (stand-in services, real gateway, emulator)."""

from __future__ import annotations

import ollama
import pytest

from bench.ollama_sim import MODELS
from proxy_plugin.upstream_facts import ModelFacts, parse_show

from plugin_fixtures import gateway_chain, stand_ins, wait_until

MODEL = "llama3.2:3b"


def test_parse_show_reads_the_trained_context_and_kv_size() -> None:
    m = MODELS[MODEL]
    info = {
        "general.architecture": "llama",
        "llama.context_length": m.train_ctx,
        "llama.block_count": m.layers,
        "llama.attention.head_count": m.heads,
        "llama.attention.head_count_kv": m.kv_heads,
        "llama.attention.key_length": m.head_dim,
    }
    assert parse_show({"model_info": info}) == ModelFacts(m.train_ctx, 2 * m.layers * m.kv_heads * m.head_dim * 2)
    for garbage in (
        None,
        [],
        {"model_info": []},
        {"model_info": {"general.architecture": 5}},
        {"model_info": {"general.architecture": "llama", "llama.context_length": -3}},
    ):
        assert parse_show(garbage).context_length == 0


@pytest.mark.parametrize(
    ("mode", "version", "cached_known"), [("split", "0.33.3", True), ("uncached", "0.30.0", False)]
)
async def test_outcomes_carry_version_limit_and_cached_count(mode: str, version: str, cached_known: bool) -> None:
    async with stand_ins() as services:
        async with gateway_chain(services.config(), count_mode=mode) as (gw, _tap, emu):
            assert gw.gateway.facts.version == version
            client = ollama.AsyncClient(host=gw.url)
            messages = [{"role": "system", "content": "be brief " * 200}, {"role": "user", "content": "hi"}]
            await client.chat(model=MODEL, messages=messages)
            await wait_until(lambda: gw.gateway.facts.model(MODEL).context_length > 0)
            await client.chat(model=MODEL, messages=messages)
            await gw.gateway.flush()
        _first, second = services.tuner.outcomes
        assert second.ollama_version == version and second.model_context_limit == MODELS[MODEL].train_ctx
        assert second.kv_bytes_per_token > 0
        assert second.cached_count_known is cached_known
        if cached_known:  # the repeated system prompt came from the KV cache
            assert second.prompt_eval_cached_count == emu.requests[1].cached_tokens > 0
            assert second.prompt_eval_count == emu.requests[1].prompt_eval_count
        else:
            assert second.prompt_eval_count == emu.requests[1].prompt_eval_count - emu.requests[1].cached_tokens
