"""Match and Observe throughput of one matcher process (`ollama-optimizer matcher` subprocess) under concurrent clients.

Run: .venv/bin/python -m bench.matcher_load [--mix uniform|realistic] [--seconds 5 --concurrency 1,2,4,8,16]
     [--observe-clients 4 --observe-batch 16]

Mixes:
- ``uniform``: 200 templates of 100-1,500 tokens, requests are one-token variants of them;
- ``realistic``: the prompt shapes of ``bench.shapes`` (chat sessions whose history grows turn by turn,
  RAG, agents with tool schemas, short and long heads) plus templates sharing boilerplate heads of 128
  tokens (``SHARED_HEADS`` heads, ``PER_HEAD`` templates each), and one-offs topped up to 30 % of all
  prompts; in the corpus's order (a session's turns in order), cycled.

Phases: fingerprints of the first ``--observe-requests`` requests (Match, before anything is learned);
Observe of each of them once, in order, by ``--observe-clients`` clients, in ObserveBatch calls of
``--observe-batch`` (``observe_per_s``: observations per second; the matcher learns the mix here, from an
empty database); then, for each concurrency level, closed-loop clients sending Match for
``--seconds``: RPS and client-observed p50/p99 per level, and the best RPS whose p99 is at most 10 ms.
Clients share the 2 CPUs with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator

import numpy as np

from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

from .fingerprint import prompt_of_tokens
from .lookup import embedded_database, matcher_process
from .shapes import make_shapes, sentences

P99_BUDGET_MS = 10.0
ONE_OFF_SHARE = 0.3
SHARED_HEADS = 5
PER_HEAD = 20
HEAD_TOKENS = 128


def uniform_requests(seed: int) -> Iterator[str]:
    """One-token variants of 200 templates, endlessly."""
    texts = [prompt_of_tokens(random.Random(i).randint(100, 1500), i) for i in range(200)]
    rng = random.Random(seed)
    while True:
        words = rng.choice(texts).split()
        words[rng.randrange(len(words))] = f"v{rng.getrandbits(20)}"
        yield " ".join(words)


def realistic_prompts(seed: int) -> list[str]:
    """The realistic mix, in order (see the module docstring)."""
    rng = random.Random(seed)
    corpus = make_shapes(seed)
    texts = [p.text for p in corpus]
    existing_one_offs = sum(p.truth < 0 for p in corpus)
    for _ in range(SHARED_HEADS):
        head = sentences(rng, HEAD_TOKENS)
        for _ in range(PER_HEAD):
            body = sentences(rng, rng.randint(100, 400))
            at = sorted(rng.sample(range(len(texts) + 1), 10))
            for i, position in enumerate(at):  # ten requests per template, spread over the corpus
                texts.insert(position + i, f"{head}\n\n{body}\n\n{sentences(rng, rng.randint(5, 60))}")
    one_offs = int((ONE_OFF_SHARE * len(texts) - existing_one_offs) / (1 - ONE_OFF_SHARE))
    for _ in range(max(0, one_offs)):
        texts.insert(rng.randrange(len(texts) + 1), sentences(rng, rng.randint(5, 600)))
    return texts


def _requests(mix: str, seed: int) -> Iterator[str]:
    return uniform_requests(seed) if mix == "uniform" else itertools.cycle(realistic_prompts(seed))


async def _closed_loop(clients: int, seconds: float, call: Callable[[], object]) -> tuple[list[float], float]:
    """Latencies (ms) of ``call`` by ``clients`` closed-loop clients for ``seconds``, and the elapsed time."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()  # type: ignore[misc]
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - started


def _figures(latencies: list[float], elapsed: float) -> dict:
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }


async def _fingerprints(stub: matcher_pb2_grpc.MatcherStub, texts: list[str]) -> list[matcher_pb2.Fingerprints]:
    """Match's fingerprints of every text (8 at a time)."""
    out: list[matcher_pb2.Fingerprints] = []
    for i in range(0, len(texts), 8):
        answers = await asyncio.gather(
            *(stub.Match(matcher_pb2.MatchRequest(model="bench", text=t), timeout=30) for t in texts[i : i + 8])
        )
        out += [a.fingerprints for a in answers]
    return out


async def run(args: argparse.Namespace) -> dict:
    requests = _requests(args.mix, args.seed)
    async with embedded_database() as (dsn, pool), matcher_process(dsn) as address, create_channel(address) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        observed = await _fingerprints(stub, list(itertools.islice(requests, args.observe_requests)))
        batches = [observed[i : i + args.observe_batch] for i in range(0, len(observed), args.observe_batch)]
        pending = iter(batches)
        created = 0
        latencies: list[float] = []

        async def observer() -> None:  # each request observed once, in order, by whichever client is free
            nonlocal created
            for batch in pending:
                items = [matcher_pb2.ObserveRequest(model="bench", fingerprints=f) for f in batch]
                started = time.perf_counter()
                if len(items) == 1:
                    answers = [await stub.Observe(items[0], timeout=30)]
                else:
                    answers = list(
                        (
                            await stub.ObserveBatch(matcher_pb2.ObserveBatchRequest(observations=items), timeout=60)
                        ).results
                    )
                latencies.append((time.perf_counter() - started) * 1000)
                created += sum(a.created for a in answers)

        started = time.perf_counter()
        await asyncio.gather(*(observer() for _ in range(args.observe_clients)))
        elapsed = time.perf_counter() - started
        observe_figures = {
            "clients": args.observe_clients,
            "batch": args.observe_batch,
            "observations": len(observed),
            "observe_per_s": round(len(observed) / elapsed, 1),
            "call_p50_ms": _figures(latencies, elapsed)["p50_ms"],
            "call_p99_ms": _figures(latencies, elapsed)["p99_ms"],
            "created": created,
        }
        templates = await pool.fetchval("SELECT count(*) FROM matcher_template")

        async def match() -> None:
            await stub.Match(matcher_pb2.MatchRequest(model="bench", text=next(requests)), timeout=5)

        levels = []
        for clients in args.concurrency:
            latencies, elapsed = await _closed_loop(clients, args.seconds, match)
            levels.append({"clients": clients, **_figures(latencies, elapsed)})
    within = [lv["rps"] for lv in levels if lv["p99_ms"] <= P99_BUDGET_MS]
    return {
        "bench": "matcher_load",
        "mix": args.mix,
        "seed": args.seed,
        "seconds_per_level": args.seconds,
        "observe": observe_figures,
        "templates_after_observe": templates,
        "levels": levels,
        "match_rps_at_p99_le_10ms": max(within) if within else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mix", choices=("uniform", "realistic"), default="uniform")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16])
    parser.add_argument("--observe-clients", type=int, default=4)
    parser.add_argument(
        "--observe-batch",
        type=int,
        default=16,
        help="observations per ObserveBatch call, as the plugin's telemetry sends them (1: unary Observe)",
    )
    parser.add_argument(
        "--observe-requests",
        type=int,
        default=3000,
        help="requests observed once each (fingerprinted before the timed phases)",
    )
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
