"""The gateway tells the tuner what /api/ps shows: the default context (no num_ctx sent), size and VRAM share."""
from __future__ import annotations

import ollama

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from plugin_fixtures import StandInTuner, gateway_chain, stand_ins
from proxy_plugin.loaded_models import LoadedModel, parse_ps

MODEL = "llama3.1:8b"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


class PassthroughTuner(StandInTuner):
    async def Recommend(self, request, context):  # noqa: N802
        return tuner_pb2.RecommendResponse(action=tuner_pb2.PASSTHROUGH, decision_id="p", reason_code="no_data")


def test_parse_ps_skips_malformed_entries() -> None:
    body = {"models": [
        {"name": "a:1", "model": "a:1", "context_length": 32768, "size": 9000, "size_vram": 7000},
        {"name": "b:1", "context_length": "4096"},
        {"name": "c:1", "context_length": True},
        "junk",
        {"model": "d:1", "context_length": 8192, "size": -5},
    ]}
    assert parse_ps(body) == {"a:1": LoadedModel(32768, 9000, 7000), "d:1": LoadedModel(8192, 0, 0)}
    assert parse_ps({"models": "x"}) == {} and parse_ps([]) == {}


async def test_passthrough_outcomes_carry_the_default_context_from_api_ps() -> None:
    async with stand_ins(tuner=PassthroughTuner()) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, emu):
            client = ollama.AsyncClient(host=gw.url)
            await client.chat(model=MODEL, messages=MESSAGES)
            await client.chat(model=MODEL, messages=MESSAGES)
            await gw.gateway.core.flush()
            default_ctx = emu.runner_options(MODEL)["num_ctx"]
            assert default_ctx == 32768  # the VRAM-tier default on a 24 GB GPU
            # The first answer's load is read from /api/ps before its outcome is reported: the default is
            # known from the first passthrough on.
            assert [o.loaded_context_length for o in services.tuner.outcomes] == [default_ctx, default_ctx]
            assert [o.runner_load for o in services.tuner.outcomes] == [tuner_pb2.RUNNER_LOADED,
                                                                         tuner_pb2.RUNNER_KEPT]
            second = services.tuner.outcomes[1]
            assert 0 < second.model_vram_bytes <= second.model_size_bytes
