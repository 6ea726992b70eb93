"""A virtual clock for the emulator: simulated time advances only when the benchmark driver says so.

At high time scales a wall clock turns milliseconds of client or gateway work into simulated seconds
of arrival delay. Here the driver sets each request's simulated arrival time, and the emulator's HTTP
layer holds every response until the driver advances the clock past its simulated end, so learning
only ever sees outcomes that have finished in simulated time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Handler

from bench.ollama_sim import Emulator, EmulatorConfig
from bench.ollama_sim.server import OllamaApp


class VirtualClock:
    """Simulated seconds; coroutines wait on it, the driver advances it."""

    def __init__(self) -> None:
        self.t = 0.0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.scheduled = asyncio.Event()  # set when the emulator has scheduled a request

    def now(self) -> float:
        return self.t

    async def wait_until(self, sim_t: float) -> None:
        if sim_t <= self.t:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (sim_t, next(self._seq), future))
        await future

    def next_wake(self) -> float:
        """Earliest simulated time someone waits for (inf when nobody waits)."""
        return self._waiters[0][0] if self._waiters else math.inf

    def advance(self, sim_t: float) -> int:
        """Move to ``sim_t`` and release every waiter due by then; returns how many were released."""
        self.t = max(self.t, sim_t)
        released = 0
        while self._waiters and self._waiters[0][0] <= self.t:
            _t, _seq, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                released += 1
        return released


WALL_HEADER = "X-Emulator-Wall-Seconds"
"""Wall-clock seconds the emulator held a (non-streamed) request, including its wait for the virtual clock:
a client subtracts it from its round trip to get what the path to the emulator cost in real time."""


@web.middleware
async def _stamp_wall_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    if not response.prepared:
        response.headers[WALL_HEADER] = f"{time.perf_counter() - started:.6f}"
    return response


class _VirtualApp(OllamaApp):
    """The emulator's HTTP API with responses paced by the virtual clock instead of the wall clock."""

    def __init__(self, emulator: Emulator, clock: VirtualClock) -> None:
        super().__init__(emulator.engine)
        self.clock = clock

    def build(self) -> web.Application:
        app = super().build()
        app.middlewares.append(_stamp_wall_time)
        return app

    async def _until(self, sim_t: float) -> None:
        self.clock.scheduled.set()  # a request's first wait comes right after the engine scheduled it
        await self.clock.wait_until(sim_t)


@asynccontextmanager
async def virtual_emulator(config: EmulatorConfig) -> AsyncIterator[tuple[Emulator, VirtualClock]]:
    """An emulator (counters, request log, memory figures) whose clock is a VirtualClock."""
    emulator, clock = Emulator(config), VirtualClock()
    emulator.engine.now = clock.now  # type: ignore[method-assign]
    runner = web.AppRunner(_VirtualApp(emulator, clock).build(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, 0)
    await site.start()
    emulator.port = runner.addresses[0][1]
    try:
        yield emulator, clock
    finally:
        clock.advance(math.inf)
        await runner.cleanup()
