"""The plugin's telemetry sends Observe in batches (ObserveBatch) to a matcher that has it, and one Observe per
request to an older matcher, without opening the learning breaker."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ollama_optimizer.gen.optimizer.v1 import matcher_pb2 as pb
from proxy_plugin.core import OptimizerCore

from matcher_fixtures import prompt
from plugin_fixtures import plugin_config, sample, stand_ins


def _chat(seed: int) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": prompt(seed, 300)}]}


def _handled(method: str) -> float:
    """Calls of ``method`` the matcher (in this process) completed."""
    return (
        REGISTRY.get_sample_value(
            "grpc_server_handled_total",
            {"grpc_type": "unary", "grpc_service": "optimizer.v1.Matcher", "grpc_method": method, "grpc_code": "OK"},
        )
        or 0.0
    )


async def test_a_batch_of_observations_reaches_the_matcher(matcher, matcher_stub) -> None:
    async with stand_ins() as services:
        core = OptimizerCore(plugin_config(matcher.address, services.tuner_address, batch_size=16))
        sent = sample("optimizer_plugin_telemetry_sent_total", kind="observe")
        unary, batches = _handled("Observe"), _handled("ObserveBatch")
        chats = [_chat(71)] * 4 + [_chat(72)] * 3
        for chat in chats:
            _body, decision = await core.prepare(chat)
            core.observe(chat, {"done": True}, decision)
        await core.flush()
        await core.close()
    assert sample("optimizer_plugin_telemetry_sent_total", kind="observe") == sent + len(chats)
    assert _handled("Observe") == unary and _handled("ObserveBatch") > batches
    listed = await matcher_stub.ListTemplates(pb.ListTemplatesRequest())
    assert sorted(t.observations for t in listed.templates) == [3, 4]


async def test_an_older_matcher_gets_one_observe_per_request() -> None:
    async with stand_ins() as services:  # the stand-in matcher has no ObserveBatch
        core = OptimizerCore(services.config(batch_size=16))
        for seed in range(5):
            _body, decision = await core.prepare(_chat(seed))
            core.observe(_chat(seed), {"done": True}, decision)
        await core.flush()
        assert len(services.matcher.observed) == 5
        _body, decision = await core.prepare(_chat(9))
        core.observe(_chat(9), {"done": True}, decision)
        await core.flush()
        assert len(services.matcher.observed) == 6
        assert sample("optimizer_plugin_learning_breaker_state", service="matcher") == 0
        await core.close()
