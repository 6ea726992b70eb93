"""The gateway tells the tuner which context Ollama loads a model with when no num_ctx is sent."""
from __future__ import annotations

import ollama

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from plugin_fixtures import StandInTuner, gateway_chain, stand_ins, wait_until
from proxy_plugin.loaded_context import parse_ps

MODEL = "llama3.1:8b"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


class PassthroughTuner(StandInTuner):
    async def Recommend(self, request, context):  # noqa: N802
        return tuner_pb2.RecommendResponse(action=tuner_pb2.PASSTHROUGH, decision_id="p", reason_code="no_data")


def test_parse_ps_skips_malformed_entries() -> None:
    body = {"models": [
        {"name": "a:1", "model": "a:1", "context_length": 32768},
        {"name": "b:1", "context_length": "4096"},
        {"name": "c:1", "context_length": True},
        "junk",
        {"model": "d:1", "context_length": 8192},
    ]}
    assert parse_ps(body) == {"a:1": 32768, "d:1": 8192}
    assert parse_ps({"models": "x"}) == {} and parse_ps([]) == {}


async def test_passthrough_outcomes_carry_the_default_context_from_api_ps() -> None:
    async with stand_ins(tuner=PassthroughTuner()) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, emu):
            client = ollama.AsyncClient(host=gw.url)
            await client.chat(model=MODEL, messages=MESSAGES)
            contexts = gw.gateway.loaded_contexts
            await wait_until(lambda: contexts.get(MODEL) > 0)
            await client.chat(model=MODEL, messages=MESSAGES)
            await gw.gateway.core.flush()
            default_ctx = emu.runner_options(MODEL)["num_ctx"]
            assert default_ctx == 32768  # the VRAM-tier default on a 24 GB GPU
            assert [o.loaded_context_length for o in services.tuner.outcomes] == [0, default_ctx]
