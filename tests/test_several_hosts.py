"""Several Ollama hosts: two emulators of different hardware behind two gateways that share one matcher and one
tuner. Learned state is kept per (host label, model) and shown per host in explain, stats and the metrics."""

from __future__ import annotations

import random

import ollama
from prometheus_client import REGISTRY

from bench.workload import words
from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc

from plugin_fixtures import gateway_chain, plugin_config, wait_until

MODEL = "llama3.1:8b"
HEAD = words(random.Random(21), 900)


def templated(seed: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": HEAD}, {"role": "user", "content": words(random.Random(seed), 30)}]


async def test_two_hosts_learn_apart(matcher, tuner) -> None:
    small = plugin_config(matcher.address, tuner.address, ollama_host="gpu-8gb")
    large = plugin_config(matcher.address, tuner.address, ollama_host="gpu-24gb")
    async with (
        gateway_chain(small, hardware="gpu-8gb") as (gw_small, _t1, emu_small),
        gateway_chain(large, hardware="gpu-24gb") as (gw_large, _t2, emu_large),
    ):
        clients = [(gw, ollama.AsyncClient(host=gw.url)) for gw in (gw_small, gw_large)]  # connections stay open
        for i in range(6):
            for gw, client in clients:
                await client.chat(model=MODEL, messages=templated(i))
                await gw.gateway.flush()
        models = tuner.core.policy.models
        hosts = (f"{MODEL} @gpu-8gb", f"{MODEL} @gpu-24gb")
        # The gateways learn after answering: wait until the tuner has learned a default context for both hosts.
        await wait_until(lambda: all(key in models and models[key].default_ctx for key in hosts))
        assert {f"{MODEL} @gpu-8gb", f"{MODEL} @gpu-24gb"} <= set(models) and MODEL not in models
        # Each host's default context (its VRAM tier) was learned on its own, not merged.
        assert models[f"{MODEL} @gpu-8gb"].default_ctx == 4096
        assert models[f"{MODEL} @gpu-24gb"].default_ctx == 32768
        assert emu_small.truncated_requests == emu_large.truncated_requests == 0
        async with create_channel(tuner.address) as channel:
            stub = tuner_pb2_grpc.TunerStub(channel)
            explained = {
                host: await stub.Explain(tuner_pb2.ExplainRequest(model=MODEL, ollama_host=host))
                for host in ("gpu-8gb", "gpu-24gb")
            }
            summary = await stub.Summary(tuner_pb2.SummaryRequest(period_seconds=600))
        assert {h: e.ollama_host for h, e in explained.items()} == {"gpu-8gb": "gpu-8gb", "gpu-24gb": "gpu-24gb"}
        assert "default context=4096 (learned)" in explained["gpu-8gb"].reason
        assert "default context=32768 (learned)" in explained["gpu-24gb"].reason
        rows = {(m.model, m.ollama_host): m.requests for m in summary.models}
        assert rows == {(MODEL, "gpu-8gb"): 6, (MODEL, "gpu-24gb"): 6}
        for host in ("gpu-8gb", "gpu-24gb"):
            assert REGISTRY.get_sample_value("optimizer_tuner_models_by_host", {"ollama_host": host}) == 1
