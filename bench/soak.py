"""Soak: `python -m bench.soak` (last line: one JSON object).

1. The matcher (a real `ollama-optimizer matcher` process on a standalone Postgres) at its measured
   capacity and at 2x, open loop: load beyond capacity is shed with RESOURCE_EXHAUSTED (the server's
   maximum_concurrent_rpcs) instead of queueing without bound; RSS and open fds of the server process
   before and after.
2. The gateway under concurrent streaming clients (some hanging up mid-stream): the first chunk arrives
   long before the upstream finishes (no whole-body buffering), and no upstream connection is left
   behind (established sockets from the gateway to the emulator before/after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
import psutil

from bench import processes
from bench.ports import free_port
from bench.processes import Postgres, Service, wait_for
from bench.workload import words
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

MODEL = "llama3.2:3b"
_rng = random.Random(5)
HEAD = words(_rng, 300)


def _footprint(pid: int) -> tuple[float, int]:
    proc = psutil.Process(pid)
    return proc.memory_info().rss / 2**20, proc.num_fds()


REQUESTS = [matcher_pb2.MatchRequest(model=MODEL, text=HEAD + " " + words(random.Random(i), 40)) for i in range(256)]
MAX_CLIENT_IN_FLIGHT = 1024  # far above the server's limit: the server, not the client, must shed


def _request(rng: random.Random) -> matcher_pb2.MatchRequest:
    return rng.choice(REQUESTS)  # precomputed (cheap client); the soak disables the matcher's soft cache


async def capacity(stub: matcher_pb2_grpc.MatcherStub, seconds: float, concurrency: int) -> float:
    """Closed-loop Match throughput (requests/s)."""
    done = 0
    end = time.monotonic() + seconds

    async def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        while time.monotonic() < end:
            try:
                await stub.Match(_request(rng), timeout=5)
                done += 1
            except grpc.aio.AioRpcError as exc:  # shed: the measured capacity counts answers only
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / seconds


async def open_loop(stub: matcher_pb2_grpc.MatcherStub, rate: float, seconds: float, deadline_s: float) -> dict:
    """Send at a fixed rate regardless of answers; count outcomes by status code."""
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    rng = random.Random(int(rate))
    tasks: set[asyncio.Task[None]] = set()
    max_in_flight = 0

    async def one() -> None:
        started = time.perf_counter()
        try:
            await stub.Match(_request(rng), timeout=deadline_s)
            latencies.append(time.perf_counter() - started)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1

    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate) - sent
        for _ in range(due):
            if len(tasks) >= MAX_CLIENT_IN_FLIGHT:
                codes["client_skipped"] += 1
                continue
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent += max(due, 0)
        max_in_flight = max(max_in_flight, len(tasks))
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    latencies.sort()
    q = lambda p: round(latencies[int(p * (len(latencies) - 1))] * 1e3, 2) if latencies else None  # noqa: E731
    return {
        "offered_per_s": round(rate, 1),
        "sent": sent,
        "codes": dict(codes),
        "served_per_s": round(codes["OK"] / seconds, 1),
        "ok_latency_ms_p50": q(0.5),
        "ok_latency_ms_p99": q(0.99),
        "client_max_in_flight": max_in_flight,
    }


async def matcher_soak(root: Path, args: argparse.Namespace) -> tuple[dict, Postgres, Service]:
    postgres = await processes.start_postgres(root)
    env = processes.service_env(
        postgres.dsn,
        "WARNING",
        OPTIMIZER_MAX_CONCURRENT_RPCS=str(args.max_concurrent),
        MATCHER_CACHE_SIZE="0",
    )
    matcher = Service("matcher", env, postgres.log_path.parent)
    try:
        return await _load_phases(matcher, args), postgres, matcher
    except BaseException:
        matcher.terminate()
        postgres.terminate()
        raise


async def _load_phases(matcher: Service, args: argparse.Namespace) -> dict:
    matcher.start()
    await wait_for(matcher.ready, 60, "matcher serving")
    async with grpc.aio.insecure_channel(matcher.address) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        await capacity(stub, 2, 4)  # warm-up
        before = _footprint(matcher.pid)
        cap = await capacity(stub, args.capacity_seconds, args.concurrency)
        phases = [await open_loop(stub, cap * factor, args.seconds, args.deadline) for factor in (1.0, 2.0)]
        await capacity(stub, 2, 4)  # the server still answers normally afterwards
    after = _footprint(matcher.pid)
    shed = sum(p["codes"].get("RESOURCE_EXHAUSTED", 0) for p in phases)
    return {
        "capacity_per_s": round(cap, 1),
        "max_concurrent_rpcs": args.max_concurrent,
        "at_capacity": phases[0],
        "at_2x": phases[1],
        "shed_resource_exhausted": shed,
        "rss_mib_before": round(before[0], 1),
        "rss_mib_after": round(after[0], 1),
        "rss_growth_mib": round(after[0] - before[0], 1),
        "fds_before": before[1],
        "fds_after": after[1],
        "fd_growth": after[1] - before[1],
    }


def _upstream_connections(gateway_pid: int, upstream_port: int) -> int:
    return sum(
        1
        for c in psutil.Process(gateway_pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == upstream_port and c.status == psutil.CONN_ESTABLISHED
    )


async def _stream(session: aiohttp.ClientSession, url: str, seed: int, hang_up: bool) -> tuple[float, float] | None:
    """(first chunk, end) seconds after sending; None when this client hung up after the first chunk."""
    rng = random.Random(seed)
    body = {
        "model": MODEL,
        "stream": True,
        "options": {"num_predict": 200},
        "messages": [{"role": "user", "content": HEAD + " " + words(rng, 30)}],
    }
    started = time.perf_counter()
    first = None
    async with session.post(url + "/api/chat", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
        async for _chunk in response.content.iter_any():
            if first is None:
                first = time.perf_counter() - started
                if hang_up:
                    response.close()
                    return None
    return (first or 0.0), time.perf_counter() - started


async def gateway_soak(root: Path, matcher: Service, args: argparse.Namespace) -> dict:
    logs = root / "logs"
    emu_port, gw_port, gw_metrics = free_port(), free_port(), free_port()
    emulator = processes.emulator_process(logs, emu_port, args.stream_time_scale, "--num-parallel", "4")
    tuner_absent = f"127.0.0.1:{free_port()}"
    gateway = processes.gateway_process(
        logs, gw_port, emu_port, gw_metrics, os.environ, MATCHER_ADDRESS=matcher.address, TUNER_ADDRESS=tuner_absent
    )
    emulator.start()
    gateway.start()
    url = f"http://127.0.0.1:{gw_port}"
    try:
        await wait_for(lambda: processes.relaying(url), 60, "gateway relaying")
        before = _upstream_connections(gateway.pid, emu_port)
        results: list[tuple[float, float] | None] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            for wave in range(args.waves):
                results += await asyncio.gather(
                    *(_stream(session, url, wave * 1000 + i, hang_up=i % 4 == 3) for i in range(args.streams))
                )
        during = _upstream_connections(gateway.pid, emu_port)

        async def released() -> bool:
            return _upstream_connections(gateway.pid, emu_port) <= before

        try:
            idle_s = await wait_for(released, 60, "upstream connections released", 0.5)
        except TimeoutError:
            idle_s = None
        after = _upstream_connections(gateway.pid, emu_port)
    finally:
        gateway.terminate()
        emulator.terminate()
    complete = [r for r in results if r is not None]
    # Streamed, not buffered: the body keeps arriving for a while after its first chunk.
    early = sum(1 for first, end in complete if end - first >= 0.05)
    complete.sort(key=lambda r: r[1])
    return {
        "streams": len(results),
        "hung_up_mid_stream": len(results) - len(complete),
        "completed": len(complete),
        "first_chunk_50ms_or_more_before_end": early,
        "first_chunk_ms_median": round(sorted(f for f, _ in complete)[len(complete) // 2] * 1e3, 1),
        "body_ms_median": round(complete[len(complete) // 2][1] * 1e3, 1),
        "upstream_established_before": before,
        "upstream_established_after_load": during,
        "upstream_established_after_idle": after,
        "upstream_release_s": idle_s,
    }


async def run(args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))
    postgres = matcher = None
    try:
        matcher_result, postgres, matcher = await matcher_soak(root, args)
        gateway_result = await gateway_soak(root, matcher, args)
    finally:
        for proc in (matcher, postgres):
            if proc is not None:
                proc.terminate()
    return {
        "benchmark": "soak",
        "rss_growth_mib": matcher_result["rss_growth_mib"],
        "fd_growth": matcher_result["fd_growth"],
        "shed_resource_exhausted": matcher_result["shed_resource_exhausted"],
        "matcher": matcher_result,
        "gateway_streaming": gateway_result,
        "config": {
            "seconds_per_phase": args.seconds,
            "capacity_seconds": args.capacity_seconds,
            "deadline_s": args.deadline,
            "streams": args.streams,
            "waves": args.waves,
            "cpus": os.cpu_count(),
            "logs": str(root / "logs"),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=60.0, help="duration of each phase (1x, then 2x capacity)")
    p.add_argument("--capacity-seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop clients measuring capacity")
    p.add_argument("--max-concurrent", type=int, default=8, help="OPTIMIZER_MAX_CONCURRENT_RPCS of the matcher")
    p.add_argument("--deadline", type=float, default=2.0, help="client deadline of each Match (s)")
    p.add_argument("--streams", type=int, default=32, help="concurrent streaming clients per wave")
    p.add_argument("--waves", type=int, default=3)
    p.add_argument("--stream-time-scale", type=float, default=0.5)
    print(json.dumps(asyncio.run(run(p.parse_args(argv)))))


if __name__ == "__main__":
    main()
