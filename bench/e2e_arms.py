"""The arms' client-side behaviour and server-wide settings, and the optimizer stack (Postgres + matcher +
tuner + gateway).

    passthrough   Ollama's defaults: requests as the user wrote them, the server's default context
    static-8k     OLLAMA_CONTEXT_LENGTH=8192 on the server (the setting Aider's Ollama docs recommend)
    static-32k    OLLAMA_CONTEXT_LENGTH=32768 on the server
    client-rule   the client sizes num_ctx per request as Aider does (aider/models.py):
                  int(prompt tokens x 1.25) + 8192
    naive         the original in-process plugin: 1.2 x (prompt + output) of the template's last request
    optimizer     this optimizer behind its gateway
    oracle        the best fixed configuration in hindsight (per model: the smallest context that holds
                  every request of the run; the best num_batch)
    phase-oracle  the best fixed configuration per workload phase (a quarter of the run), switching at the
                  phase boundaries
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from bench.ollama_sim import MODELS
from bench.ollama_sim.output import OutputHook
from bench.ollama_sim.tokens import prompt_tokens, render
from bench.workload import WorkloadRequest
from matcher_service.main import start_matcher
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.db import create_pool
from ollama_optimizer.embedded_pg import EmbeddedPostgres
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from ollama_optimizer.migrations import apply_migrations
from proxy_plugin.config import PluginConfig
from proxy_plugin.core import OptimizerCore
from proxy_plugin.decision import RequestPlan
from proxy_plugin.gateway import start_gateway
from proxy_plugin.runner_loads import RunnerLoads
from tuner_service.core import TunerCore
from tuner_service.main import start_tuner

ARMS = ("passthrough", "static-8k", "static-32k", "client-rule", "naive", "optimizer", "oracle", "phase-oracle")
BASELINES = ("passthrough", "static-8k", "static-32k", "client-rule")
"""What users do without the optimizer; the optimizer is compared with each on the requests none truncated."""
SERVER_CONTEXT = {"static-8k": 8192, "static-32k": 32768}
"""Arms that change only the server-wide default context (OLLAMA_CONTEXT_LENGTH)."""
NAIVE_FACTOR = 1.2  # the original in-process plugin: (prompt_eval_count + eval_count) x 1.2
CLIENT_RULE_FACTOR, CLIENT_RULE_REPLY = 1.25, 8192  # aider/models.py: int(token_count(messages) * 1.25) + 8192
PHASES = 4
_databases = itertools.count(1)


class Passthrough:
    """Ollama's defaults: requests go out exactly as the user wrote them."""

    def options_for(self, request: WorkloadRequest) -> dict:
        return {}

    def completed(self, request: WorkloadRequest, body: dict) -> None:
        return None


@dataclass
class Naive:
    """num_ctx = 1.2 x (prompt + output tokens) of the last answered request of the same template."""

    last: dict[int, int] = field(default_factory=dict)

    def options_for(self, request: WorkloadRequest) -> dict:
        window = self.last.get(request.template_id) if request.template_id else None
        return {"num_ctx": window} if window else {}

    def completed(self, request: WorkloadRequest, body: dict) -> None:
        used = int(body.get("prompt_eval_count") or 0) + int(body.get("eval_count") or 0)
        if request.template_id and used:
            self.last[request.template_id] = int(used * NAIVE_FACTOR)


@dataclass
class ClientRule:
    """A client that sizes the context per request from its own token count (Aider's rule, unrounded)."""

    def options_for(self, request: WorkloadRequest) -> dict:
        model = MODELS[request.model]
        counted = prompt_tokens(render(request.messages, model), model)
        return {"num_ctx": int(counted * CLIENT_RULE_FACTOR) + CLIENT_RULE_REPLY}

    def completed(self, request: WorkloadRequest, body: dict) -> None:
        return None


def request_need(request: WorkloadRequest, output_tokens: OutputHook) -> int:
    """Tokens a request really needs: its rendered prompt plus the answer the emulator will generate."""
    model = MODELS[request.model]
    return prompt_tokens(render(request.messages, model), model) + output_tokens(request.model, request.messages)


def oracle_contexts(requests: list[WorkloadRequest], output_tokens: OutputHook) -> dict[str, int]:
    """Per model, the smallest context (a multiple of 1024) that holds every request of the run."""
    need: dict[str, int] = {}
    for request in requests:
        need[request.model] = max(need.get(request.model, 0), request_need(request, output_tokens))
    return {m: min(MODELS[m].train_ctx, 1024 * math.ceil((n + 1) / 1024)) for m, n in need.items()}


@dataclass
class Oracle:
    """One fixed configuration per model, chosen in hindsight: no truncation, no reload after the first load."""

    num_ctx: dict[str, int]
    num_batch: int

    def options_for(self, request: WorkloadRequest) -> dict:
        return {"num_ctx": self.num_ctx[request.model], "num_batch": self.num_batch}

    def completed(self, request: WorkloadRequest, body: dict) -> None:
        return None


def phase_of(index: int, n: int) -> int:
    """The workload phase (0..PHASES-1) of request ``index`` of ``n``."""
    return min(PHASES - 1, index * PHASES // max(1, n))


@dataclass
class PhaseOracle:
    """The oracle's rule applied to each phase of the run on its own: a reload at most per phase change."""

    num_ctx: list[dict[str, int]]  # per phase, per model
    num_batch: int
    n: int

    @classmethod
    def choose(cls, requests: list[WorkloadRequest], output_tokens: OutputHook, num_batch: int) -> PhaseOracle:
        phases: list[list[WorkloadRequest]] = [[] for _ in range(PHASES)]
        for r in requests:
            phases[phase_of(r.index, len(requests))].append(r)
        return cls([oracle_contexts(p, output_tokens) for p in phases], num_batch, len(requests))

    def options_for(self, request: WorkloadRequest) -> dict:
        return {"num_ctx": self.num_ctx[phase_of(request.index, self.n)][request.model], "num_batch": self.num_batch}

    def completed(self, request: WorkloadRequest, body: dict) -> None:
        return None


ClientPolicy = Passthrough | ClientRule | Naive | Oracle | PhaseOracle


def client_policy(arm: str, oracle: Oracle | None, phase_oracle: PhaseOracle | None = None) -> ClientPolicy:
    """The client side of every arm but the optimizer (the static arms differ only on the server)."""
    if arm == "client-rule":
        return ClientRule()
    if arm == "naive":
        return Naive()
    if arm == "oracle":
        assert oracle is not None, "the oracle arm needs its configuration"
        return oracle
    if arm == "phase-oracle":
        assert phase_oracle is not None, "the phase-oracle arm needs its phases"
        return phase_oracle
    return Passthrough()


class CountingCore(OptimizerCore):
    """The real core; counts observe() calls (so the driver knows when learning has been handed over) and
    keeps each decision's action, reason and options for the diagnosis."""

    observed = 0
    loads_judged = 0  # outcomes the gateway judged RUNNER_LOADED

    def __init__(self, config: PluginConfig) -> None:
        super().__init__(config)
        self.decisions: list[tuple[str, int, int, float]] = []  # reason, num_ctx, num_batch, prepare seconds

    async def prepare(self, request: dict[str, Any], endpoint: str | None = None) -> tuple[dict[str, Any], RequestPlan]:
        started = time.perf_counter()
        sent, decision = await super().prepare(request, endpoint)
        elapsed = time.perf_counter() - started
        self.decisions.append((decision.reason, decision.num_ctx, decision.num_batch, elapsed))
        return sent, decision

    def observe(self, request: dict[str, Any], response: dict[str, Any], decision: RequestPlan, **kw: Any) -> None:
        self.observed += 1
        self.loads_judged += kw.get("runner_load") == tuner_pb2.RUNNER_LOADED
        super().observe(request, response, decision, **kw)


@dataclass
class Optimizer:
    """This optimizer: clients send plain requests to the gateway; everything is decided behind it."""

    core: CountingCore
    tuner: TunerCore
    runner_loads: RunnerLoads
    answered_ok: int = 0

    def options_for(self, request: WorkloadRequest) -> dict:
        return {}

    def completed(self, request: WorkloadRequest, body: dict) -> None:
        if "error" not in body:
            self.answered_ok += 1

    async def settle(self, _answered: int) -> None:
        """Let telemetry of every released answer reach the matcher and the tuner (bounded wait); an answer
        whose runner-load judgement waits for requests still running is handed over once they end."""
        for _ in range(2000):
            if self.core.observed + self.runner_loads.waiting >= self.answered_ok:
                break
            await asyncio.sleep(0.001)
        await self.core.flush()


@asynccontextmanager
async def fresh_database(pg: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    """A new, migrated database (learning starts from zero), dropped afterwards."""
    name = f"e2e_{next(_databases)}"
    admin = await asyncpg.connect(pg.uri())
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        await apply_migrations(pg.uri(name))
        pool = await create_pool(pg.uri(name), 2, 8)
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@asynccontextmanager
async def optimizer_stack(
    pg: EmbeddedPostgres, upstream: str, plugin: dict[str, Any] | None = None
) -> AsyncIterator[tuple[str, Optimizer]]:
    """Real matcher + tuner on a fresh database, and the gateway in front of ``upstream``; yields its URL.

    ``plugin`` overrides PluginConfig fields (default: the shipped defaults, probes off)."""
    local = ServerConfig(listen="127.0.0.1:0", metrics_port=0)
    async with fresh_database(pg) as pool:
        matcher = await start_matcher(pool, local)
        tuner = await start_tuner(pool, local)
        config = replace(
            PluginConfig(), matcher_address=matcher.address, tuner_address=tuner.address, probes=False, **(plugin or {})
        )
        core = CountingCore(config)
        gateway = await start_gateway("127.0.0.1:0", upstream, core=core)
        try:
            yield gateway.url, Optimizer(core, tuner.core, gateway.gateway.runner_loads)
        finally:
            await gateway.stop(flush_timeout_s=1.0)
            await tuner.stop(0)
            await matcher.stop(0)


Settle = Callable[[int], Awaitable[None]]


async def enter_arm(
    stack: AsyncExitStack,
    arm: str,
    pg: EmbeddedPostgres,
    upstream: str,
    plugin: dict[str, Any] | None,
    oracle: Oracle | None,
    phase_oracle: PhaseOracle | None = None,
) -> tuple[str, ClientPolicy | Optimizer, Settle | None]:
    """Where the arm's clients send, what they add to each request, and how learning catches up: the optimizer's
    gateway in front of ``upstream`` (its stack entered on ``stack``), or ``upstream`` itself and the arm's
    client policy (nothing to settle)."""
    if arm != "optimizer":
        return upstream, client_policy(arm, oracle, phase_oracle), None
    url, optimizer = await stack.enter_async_context(optimizer_stack(pg, upstream, plugin))
    return url, optimizer, optimizer.settle
