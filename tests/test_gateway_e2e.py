"""End to end: official ollama client -> gateway -> emulator, with the real matcher and tuner on Postgres."""

from __future__ import annotations

import json
import random

import ollama

from bench.workload import words
from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc

from plugin_fixtures import gateway_chain, plugin_config

MODEL = "llama3.2:3b"
_rng = random.Random(7)
SYSTEM = words(_rng, 120)
INSTRUCTIONS = words(_rng, 400)


def templated(seed: int) -> list[dict[str, str]]:
    """One template: fixed system + instructions, a different short tail each time."""
    tail = words(random.Random(seed), 30)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": INSTRUCTIONS + "\n\n" + tail}]


async def _explain(address: str, template_id: int) -> tuner_pb2.ExplainResponse:
    async with create_channel(address) as channel:
        return await tuner_pb2_grpc.TunerStub(channel).Explain(
            tuner_pb2.ExplainRequest(model=MODEL, template_id=template_id), timeout=5
        )


async def test_learned_template_gets_options_and_streams_teach(matcher, tuner) -> None:
    cfg = plugin_config(matcher.address, tuner.address)
    async with gateway_chain(cfg) as (gw, tap, emu):
        client = ollama.AsyncClient(host=gw.url)
        core = gw.gateway.core
        decisions = []
        for i in range(8):
            if i % 2:  # streamed: learning must come from the final chunk
                parts = [p async for p in await client.chat(model=MODEL, messages=templated(i), stream=True)]
                assert parts[-1].done and parts[-1].eval_count
            else:
                assert (await client.chat(model=MODEL, messages=templated(i))).done
            decisions.append(json.loads(tap.bodies[-1][1]).get("options"))
            await core.flush()  # telemetry delivered before the next request asks
        assert decisions[0] is None  # nothing known yet: untouched
        applied = decisions[-1]
        assert applied and applied["num_ctx"] >= 1024
        assert emu.requests[-1].options["num_ctx"] == applied["num_ctx"]
        assert emu.truncated_requests == 0

        state = await _explain(tuner.address, await _template_of(matcher.address, templated(99)))
        # 4 plain + 4 streamed requests; the first (before the template existed) counts for no template.
        # More than 4 observations means streamed outcomes taught the tuner too.
        assert state.known and state.observations >= 5


async def _template_of(address: str, messages: list[dict[str, str]]) -> int:
    from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc
    from proxy_plugin.canonical import canonical_text

    async with create_channel(address) as channel:
        reply = await matcher_pb2_grpc.MatcherStub(channel).Match(
            matcher_pb2.MatchRequest(model=MODEL, text=canonical_text({"messages": messages})), timeout=5
        )
    assert reply.matched
    return reply.template_id


async def test_services_killed_mid_run_passthrough_is_byte_identical(matcher, tuner) -> None:
    cfg = plugin_config(
        matcher.address, tuner.address, breaker_threshold=2, breaker_cooldown_s=3600, learning_breaker_cooldown_s=3600
    )
    async with gateway_chain(cfg) as (gw, tap, _emu):
        client = ollama.AsyncClient(host=gw.url)
        await client.chat(model=MODEL, messages=templated(1))
        await gw.gateway.flush()
        await matcher.stop(0)
        await tuner.stop(0)
        request = {"model": MODEL, "messages": templated(2), "options": {"seed": 3}}
        await ollama.AsyncClient(host=tap.url).chat(**request)
        reference = tap.bodies[-1][1]
        for _ in range(3):
            assert (await client.chat(**request)).done
            assert tap.bodies[-1][1] == reference
        assert gw.gateway.core.breaker_states()["matcher"] == "open"
