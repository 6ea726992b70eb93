"""Match throughput of one matcher process (`ollama-optimizer matcher` subprocess) under concurrent clients.

Run: .venv/bin/python -m bench.matcher_load [--seconds 5 --concurrency 1,2,4,8,16]

Learns 200 templates (Match + Observe), then for each concurrency level runs closed-loop
clients sending Match of one-token variants for ``--seconds``; reports RPS and client-observed
p99 per level and the best RPS whose p99 is at most 10 ms. Clients share the 2 CPUs with the server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import numpy as np

from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

from .fingerprint import prompt_of_tokens
from .lookup import embedded_database, matcher_process

P99_BUDGET_MS = 10.0


async def _level(stub: matcher_pb2_grpc.MatcherStub, texts: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = f"v{rng.getrandbits(20)}"
            started = time.perf_counter()
            await stub.Match(matcher_pb2.MatchRequest(model="bench", text=" ".join(words)), timeout=5)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {"clients": clients, "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2)}


async def run(args: argparse.Namespace) -> dict:
    async with embedded_database() as (dsn, _pool), matcher_process(dsn) as address:
        texts = [prompt_of_tokens(random.Random(i).randint(100, 1500), i) for i in range(200)]
        async with create_channel(address) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            for text in texts:
                match = await stub.Match(matcher_pb2.MatchRequest(model="bench", text=text))
                await stub.Observe(matcher_pb2.ObserveRequest(model="bench", fingerprints=match.fingerprints))
            levels = [await _level(stub, texts, c, args.seconds) for c in args.concurrency]
    within = [lv["rps"] for lv in levels if lv["p99_ms"] <= P99_BUDGET_MS]
    return {"bench": "matcher_load", "seconds_per_level": args.seconds, "levels": levels,
            "match_rps_at_p99_le_10ms": max(within) if within else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16])
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
