"""Closed-loop clients on simulated time: ``concurrency`` users, each sending its next request as soon as
its previous answer has arrived (in simulated time). Requests are released to the system one at a time,
in simulated-arrival order; an answer is released only when the clock reaches its simulated end.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from bench.e2e_clock import WALL_HEADER, VirtualClock
from bench.ollama_sim import Emulator, RequestRecord
from bench.workload import WorkloadRequest

OptionsFor = Callable[[WorkloadRequest], dict]
"""The arm's client-side options for a request (empty = send it as the user wrote it)."""
Completed = Callable[[WorkloadRequest, dict], None]
NATIVE = "/api/chat"
"""Called in simulated-completion order with each request and its JSON answer."""


@dataclass
class Result:
    """One request as the benchmark saw it."""

    request: WorkloadRequest
    record: RequestRecord | None  # the emulator's log entry (None: never reached it)
    status: int
    hop_s: float = 0.0  # real seconds of the client's round trip not spent inside the emulator (HTTP, gateway)


async def drive(
    requests: list[WorkloadRequest],
    concurrency: int,
    url: str,
    emulator: Emulator,
    clock: VirtualClock,
    options_for: OptionsFor,
    completed: Completed,
    settle: Callable[[int], Awaitable[None]] | None = None,
    door: str = NATIVE,
) -> list[Result]:
    """Run ``requests`` through ``url``; ``settle(n)`` runs after n answers were released (learning catches up).

    ``door`` is the endpoint the clients use: ``/api/chat``, or ``/v1/chat/completions`` as an OpenAI client
    sends the same conversation (no options: the OpenAI API has no field for them)."""
    results: list[Result | None] = [None] * len(requests)
    free = [(0.0, w) for w in range(concurrency)]
    heapq.heapify(free)
    inflight: dict[asyncio.Task, tuple[int, int]] = {}
    answered = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def send(i: int, first_record: int) -> tuple[int, dict]:
            request = requests[i]
            payload = request.payload() if door == NATIVE else {"model": request.model, "messages": request.messages}
            extra = options_for(request)
            if extra:
                payload["options"] = {**payload.get("options", {}), **extra}
            started = time.perf_counter()
            async with session.post(url + door, json=payload) as response:
                body = await response.json(content_type=None)
                status = response.status
                held = float(response.headers.get(WALL_HEADER, "nan"))
            hop = time.perf_counter() - started - held
            record = emulator.requests[first_record] if len(emulator.requests) > first_record else None
            results[i] = Result(request, record, status, hop if hop == hop else 0.0)
            return status, body

        next_index = 0
        while next_index < len(requests) or inflight:
            arrival = free[0][0] if next_index < len(requests) and free else math.inf
            if arrival <= clock.next_wake() and arrival < math.inf:
                _t, worker = heapq.heappop(free)
                clock.advance(arrival)
                clock.scheduled.clear()
                task = asyncio.create_task(send(next_index, len(emulator.requests)))
                inflight[task] = (next_index, worker)
                scheduled = asyncio.create_task(clock.scheduled.wait())
                await asyncio.wait({task, scheduled}, return_when=asyncio.FIRST_COMPLETED)
                scheduled.cancel()
                if not clock.scheduled.is_set():  # answered without reaching the emulator's clock
                    clock.scheduled.set()
                next_index += 1
                continue
            released = clock.advance(clock.next_wake()) if clock.next_wake() < math.inf else 0
            done: set[asyncio.Task] = set()
            while len(done) < max(released, 1):
                finished, _pending = await asyncio.wait(set(inflight) - done, return_when=asyncio.FIRST_COMPLETED)
                done |= finished
            for task in sorted(done, key=lambda t: inflight[t][0]):
                i, worker = inflight.pop(task)
                _status, body = task.result()
                result = results[i]
                assert result is not None
                end = clock.t if result.record is None else result.record.arrival_s + result.record.total_s
                heapq.heappush(free, (max(end, clock.t), worker))
                completed(requests[i], body)
                answered += 1
            if settle is not None:
                await settle(answered)
    return [r for r in results if r is not None]
