"""``make demo``: the emulator as Ollama, the real matcher + tuner on embedded Postgres, the gateway in
front, a templated workload sent with the official ``ollama`` client, then what was learned
(``ollama-optimizer templates`` and ``ollama-optimizer stats``)."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace

import ollama

from bench.ollama_sim import EmulatorConfig, start_emulator
from bench.overhead import running_services
from bench.workload import make_requests, make_templates
from proxy_plugin.config import load_config
from proxy_plugin.core import OptimizerCore
from proxy_plugin.gateway import start_gateway
from proxy_plugin.metrics import REGISTRY

MODELS = ["llama3.2:3b", "llama3.1:8b"]


async def _cli(*args: str) -> None:
    """Run an ``ollama-optimizer`` command as an operator would and show its output."""
    print(f"\n$ ollama-optimizer {' '.join(args)}")
    sys.stdout.flush()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ollama_optimizer.cli", *args,
                                                env={**os.environ, "OPTIMIZER_LOG_LEVEL": "WARNING"})
    await proc.wait()


def _sample(name: str, **labels: str) -> int:
    return int(REGISTRY.get_sample_value(name, labels) or 0)


async def run(requests: int, stream_every: int) -> int:
    templates = make_templates(MODELS, 4, seed=11, shifting=False)
    workload = make_requests(templates, requests, seed=11)
    async with running_services() as services, start_emulator(EmulatorConfig(time_scale=500)) as emu:
        core = OptimizerCore(replace(load_config(), matcher_address=services.matcher,
                                     tuner_address=services.tuner))
        gateway = await start_gateway("127.0.0.1:0", emu.url, core=core)
        print(f"emulator {emu.url}  <-  gateway {gateway.url}  (metrics :{gateway.metrics_port}/metrics)")
        print(f"matcher {services.matcher}  tuner {services.tuner}")
        client = ollama.AsyncClient(host=gateway.url)
        for request in workload:
            if stream_every and request.index % stream_every == 0:
                async for _part in await client.chat(model=request.model, messages=request.messages, stream=True):
                    pass
            else:
                await client.chat(model=request.model, messages=request.messages)
            await core.flush()  # let each outcome teach before the next request (a demo, not a benchmark)
        applied = _sample("optimizer_plugin_decisions_total", action="apply")
        summary = emu.summary()
        print(f"\n{requests} requests through the gateway: {applied} optimized, "
              f"{summary['reloads']} reloads, {summary['truncated_requests']} truncated, "
              f"latency p50 {summary['latency_p50_s']:.2f}s (simulated)")
        for model in MODELS:
            print(f"  {model}: runner options now {emu.runner_options(model)}")
        await _cli("templates", "--address", services.matcher)
        await _cli("stats", "--address", services.tuner)
        await gateway.stop()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--stream-every", type=int, default=3, help="stream every Nth request (0 = never)")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.requests, args.stream_every)))


if __name__ == "__main__":
    main()
