"""Shared helpers for the plugin and gateway tests (import explicitly).

Stand-in matcher/tuner gRPC servers (optionally deliberately slow, or with a blocked Report),
a recording tap in front of an upstream (raw request bytes as received), and a bounded wait.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import aiohttp
from aiohttp import web

from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc, tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.server import RunningServer, start_server
from prompt_fingerprint import DEFAULT_NORMALIZE, DEFAULT_SHINGLE_SIZE, algorithm_version
from proxy_plugin.config import PluginConfig


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a state change with a bounded loop (not a sleep-as-synchronisation)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# Tests assert behaviour, not speed: on a loaded 2-core CI machine the production 50 ms budget can run
# out and turn an expected APPLY into a (correct, but unexpected) passthrough. Deadline tests override.
GENEROUS_DEADLINES = {"budget_ms": 10_000, "call_timeout_ms": 5_000}


def plugin_config(matcher: str, tuner: str, **overrides: object) -> PluginConfig:
    """A config for tests: given addresses, no probes unless asked, no config.json/env influence."""
    settings = {"probes": False, **GENEROUS_DEADLINES, **overrides}
    return replace(PluginConfig(), matcher_address=matcher, tuner_address=tuner, **settings)


class StandInMatcher(matcher_pb2_grpc.MatcherServicer):
    """Matches everything to template 1; with ``hang`` set, never answers (deadline-bound clients)."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.never = asyncio.Event()
        self.matches = 0
        self.observed: list[matcher_pb2.ObserveRequest] = []

    async def Match(self, request, context):
        self.matches += 1
        if self.hang:
            await self.never.wait()
        units = len(request.text.split())
        fingerprints = matcher_pb2.Fingerprints(
            algorithm_version=algorithm_version(DEFAULT_SHINGLE_SIZE, DEFAULT_NORMALIZE),
            unit_count=units,
            windows=[matcher_pb2.WindowFingerprint(window=64, fingerprint=hash(request.text) & (2**64 - 1))],
        )
        return matcher_pb2.MatchResponse(
            matched=True,
            template_id=1,
            window=64,
            similarity=1.0,
            prompt_units=units,
            fingerprints=fingerprints,
            observations=10,
        )

    async def Observe(self, request, context):
        self.observed.append(request)
        return matcher_pb2.ObserveResponse(template_id=request.template_id or 1, observations=len(self.observed))


class StandInTuner(tuner_pb2_grpc.TunerServicer):
    """Always APPLY num_ctx/num_batch; records reported outcomes; ``report_gate``/``recommend_gate`` can hold
    Report/Recommend (``reports_in_flight`` counts the held Reports); ``buffer_max`` > 0 stores that many
    outcomes in all, and the rest of each batch is dropped as at a full buffer."""

    def __init__(self, num_ctx: int = 8192, num_batch: int = 256) -> None:
        self.num_ctx, self.num_batch = num_ctx, num_batch
        self.report_gate: asyncio.Event | None = None
        self.report_entered = asyncio.Event()
        self.reports_in_flight = 0
        self.recommend_gate: asyncio.Event | None = None
        self.recommend_entered = asyncio.Event()
        self.outcomes: list[tuner_pb2.Outcome] = []
        self.buffer_max = 0
        self._ids = itertools.count(1)

    async def Recommend(self, request, context):
        self.recommend_entered.set()
        if self.recommend_gate is not None:
            await self.recommend_gate.wait()
        return tuner_pb2.RecommendResponse(
            action=tuner_pb2.APPLY,
            num_ctx=self.num_ctx,
            num_batch=self.num_batch,
            decision_id=f"d{next(self._ids)}",
            confidence=0.9,
            reason_code="stand_in",
        )

    async def Report(self, request, context):
        self.report_entered.set()
        self.reports_in_flight += 1
        try:
            if self.report_gate is not None:
                await self.report_gate.wait()
        finally:
            self.reports_in_flight -= 1
        room = len(request.outcomes) if not self.buffer_max else max(0, self.buffer_max - len(self.outcomes))
        kept = list(request.outcomes)[:room]
        self.outcomes.extend(kept)
        dropped = list(range(len(kept), len(request.outcomes)))
        return tuner_pb2.ReportResponse(
            accepted=len(kept), stored=len(kept), dropped=len(dropped), dropped_index=dropped
        )


@dataclass
class StandIns:
    matcher: StandInMatcher
    tuner: StandInTuner
    servers: list[RunningServer] = field(default_factory=list)

    @property
    def matcher_address(self) -> str:
        return f"127.0.0.1:{self.servers[0].port}"

    @property
    def tuner_address(self) -> str:
        return f"127.0.0.1:{self.servers[1].port}"

    def config(self, **overrides: object) -> PluginConfig:
        return plugin_config(self.matcher_address, self.tuner_address, **overrides)

    async def stop(self) -> None:
        for running in self.servers:
            await running.server.stop(0)


@asynccontextmanager
async def stand_ins(hang_matcher: bool = False, tuner: StandInTuner | None = None) -> AsyncIterator[StandIns]:
    """Stand-in matcher and tuner on ephemeral loopback ports."""
    result = StandIns(StandInMatcher(hang=hang_matcher), tuner or StandInTuner())
    cfg = ServerConfig(listen="127.0.0.1:0", metrics_port=0)
    for servicer, add, name in (
        (result.matcher, matcher_pb2_grpc.add_MatcherServicer_to_server, "optimizer.v1.Matcher"),
        (result.tuner, tuner_pb2_grpc.add_TunerServicer_to_server, "optimizer.v1.Tuner"),
    ):
        result.servers.append(
            await start_server(cfg, [lambda s, sv=servicer, a=add: a(sv, s)], (name,), serve_metrics=False)
        )
    try:
        yield result
    finally:
        await result.stop()


class RecordingTap:
    """A transparent HTTP relay in front of ``upstream`` that records each request's raw body bytes (and
    headers)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.bodies: list[tuple[str, bytes]] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        self.bodies.append((request.path, body))
        self.headers.append(dict(request.headers))
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with self._session.request(
            request.method, self.upstream + str(request.rel_url), data=body, headers=headers
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def start(self) -> RecordingTap:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def sample(name: str, **labels: str) -> float:
    """Current value of one sample of the plugin/gateway registry (0 when absent)."""
    from proxy_plugin.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def gateway_chain(cfg: PluginConfig, **emulator: object) -> AsyncIterator[tuple[object, RecordingTap, object]]:
    """emulator <- recording tap <- gateway (core with ``cfg``); yields (running gateway, tap, emulator).

    Runners stay loaded unless the test sets ``keep_alive_s``: at ``time_scale`` 1000 Ollama's 300 s default
    is 0.3 s of wall time, and on a loaded host expiries would add loads the test did not cause."""
    from bench.ollama_sim import EmulatorConfig, start_emulator
    from proxy_plugin.core import OptimizerCore
    from proxy_plugin.gateway import start_gateway

    settings: dict[str, object] = {"time_scale": 1000.0, "keep_alive_s": -1.0, **emulator}
    async with start_emulator(EmulatorConfig(**settings)) as emu:
        tap = await RecordingTap(emu.url).start()
        running = await start_gateway("127.0.0.1:0", tap.url, core=OptimizerCore(cfg))
        try:
            yield running, tap, emu
        finally:
            await running.stop(flush_timeout_s=0.5)
            await tap.stop()
