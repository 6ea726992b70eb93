"""Tuner leases: a covered request needs only Match; anything else asks Recommend on the request path.

Real tuner (its Postgres, its gRPC server) and a stand-in matcher (template 1, or 2 for texts with "other")
on loopback; RPCs are counted by the servers' metrics interceptor. The plugin's clock is a list the test
moves, and a lease keeper's pause before a renewal is held by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import prometheus_client
import pytest

from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2_grpc, tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.server import RunningServer, start_server
from proxy_plugin.core import OptimizerCore
from proxy_plugin.decision import RequestPlan
from tuner_service.main import RunningTuner, start_tuner
from tuner_service.service import TunerServicer

from plugin_fixtures import StandInMatcher, plugin_config, sample, wait_until
from tuner_fixtures import fast_settings, local_server

MODEL = "m"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau"


def chat(user: str, **options: int) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": user}],
    }
    return {**request, "options": options} if options else request


def answered(request: dict[str, Any]) -> dict[str, Any]:
    """A plausible final chunk: about 1.3 tokens per word, a short answer."""
    words = sum(len(m["content"].split()) for m in request["messages"])
    return {
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": int(words * 1.3) + 20,
        "eval_count": 30,
        "total_duration": 1_000_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_duration": 200_000_000,
        "eval_duration": 700_000_000,
    }


def handled(method: str) -> float:
    """Tuner RPCs of ``method`` the server completed (its metrics interceptor)."""
    labels = {"grpc_type": "unary", "grpc_service": "optimizer.v1.Tuner", "grpc_method": method, "grpc_code": "OK"}
    return prometheus_client.REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


class TwoTemplates(StandInMatcher):
    async def Match(self, request, context):
        response = await super().Match(request, context)
        if "other" in request.text:
            response.template_id = 2
        return response


@dataclass
class Held:
    """A lease keeper's pause before renewing: held until the test releases it."""

    asked: list[float] = field(default_factory=list)
    paused: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.paused.set()
        await self.release.wait()
        self.release.clear()
        self.paused.clear()


@dataclass
class Setup:
    tuner: RunningTuner
    matcher: TwoTemplates
    matcher_server: RunningServer
    gate: asyncio.Event  # the tuner's Recommend waits on it
    now: list[float]
    held: Held
    core: OptimizerCore


@pytest.fixture
async def setup(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    gate = asyncio.Event()
    gate.set()
    recommend = TunerServicer.Recommend

    async def gated(self: TunerServicer, request: tuner_pb2.RecommendRequest, context: Any) -> Any:
        await gate.wait()
        return await recommend(self, request, context)

    monkeypatch.setattr(TunerServicer, "Recommend", gated)
    tuner = await start_tuner(pool, local_server(), fast_settings())
    matcher = TwoTemplates()
    matcher_server = await start_server(
        ServerConfig(listen="127.0.0.1:0", metrics_port=0),
        [lambda s: matcher_pb2_grpc.add_MatcherServicer_to_server(matcher, s)],
        ("optimizer.v1.Matcher",),
        serve_metrics=False,
    )
    now, held = [1000.0], Held()
    # Without the Match memo every request calls Match once (with it a repeated Match input needs no call).
    cfg = plugin_config(f"127.0.0.1:{matcher_server.port}", tuner.address, match_memo_size=0)
    core = OptimizerCore(cfg, clock=lambda: now[0], lease_pause=held)
    yield Setup(tuner, matcher, matcher_server, gate, now, held, core)
    gate.set()
    held.release.set()
    await core.close()
    await matcher_server.server.stop(0)
    await tuner.stop(0)


async def send(setup: Setup, request: dict[str, Any]) -> tuple[dict[str, Any], RequestPlan]:
    sent, plan = await setup.core.prepare(request)
    setup.core.observe(sent, answered(request), plan)
    await setup.core.flush()
    return sent, plan


async def leased(setup: Setup) -> RequestPlan:
    """Teach the tuner template 1 until it manages the model and a request goes out under its lease."""
    for i in range(60):
        _sent, plan = await send(setup, chat(f"{WORDS} {i}"))
        if plan.reason == "leased":
            return plan
        setup.now[0] += 1.1  # a refused lease is asked again after a second
    raise AssertionError("no request was sent under a lease")


async def test_a_covered_request_waits_for_match_only(setup: Setup) -> None:
    first = await leased(setup)
    assert first.applied and first.decision_id  # the off-path Recommend answered as the lease did
    matches, recommends = setup.matcher.matches, handled("Recommend")
    setup.gate.clear()  # Recommend now waits: a request that asked it on the request path would time out
    sent, plan = await setup.core.prepare(chat(f"{WORDS} held"))
    assert plan.reason == "leased" and plan.applied
    assert sent["options"] == {"num_ctx": first.num_ctx, "num_batch": first.num_batch}
    assert setup.matcher.matches == matches + 1 and handled("Recommend") == recommends
    setup.core.observe(sent, answered(chat(f"{WORDS} held")), plan)
    setup.gate.set()
    await setup.core.flush()  # the outcome waited for its decision id
    assert handled("Recommend") == recommends + 1 and plan.decision_id
    assert sample("optimizer_plugin_leases_total", result="used") >= 2


async def test_what_the_lease_does_not_cover_asks_recommend_on_the_request_path(setup: Setup) -> None:
    first = await leased(setup)
    cases = {
        "the client's own num_batch": (chat(f"{WORDS} mine", num_batch=64), None),
        "another context seen loaded": (chat(f"{WORDS} seen"), lambda model: first.num_ctx * 2),
        "another template": (chat(f"{WORDS} other"), None),
        "a need above the leased context": (chat(" ".join([WORDS] * (first.num_ctx // 10))), None),
    }
    for name, (request, seen) in cases.items():
        if seen is not None:
            setup.core.use_seen_context(seen)
        recommends = handled("Recommend")
        sent, plan = await setup.core.prepare(request)
        assert plan.reason != "leased" and handled("Recommend") == recommends + 1, name
        setup.core.use_seen_context(lambda model: 0)
        setup.core.observe(sent, answered(request), plan)
        await setup.core.flush()
        again = await leased(setup)  # covered requests use a lease again
    assert again.num_ctx > first.num_ctx  # the tuner grew the context for the large need, then leased it


async def test_an_expired_lease_asks_recommend(setup: Setup) -> None:
    await leased(setup)  # its keeper now holds before renewing: no renewal comes
    setup.now[0] += 5.0  # the lease's whole life (tuner_service/lease.py LEASE_MS)
    recommends = handled("Recommend")
    _sent, plan = await setup.core.prepare(chat(f"{WORDS} late"))
    assert plan.reason == "applied" and handled("Recommend") == recommends + 1


async def test_the_lease_is_renewed_off_the_request_path(setup: Setup) -> None:
    first = await leased(setup)
    await setup.held.paused.wait()
    assert setup.held.asked == [pytest.approx(3.75)]  # renew with a quarter of the 5 s life left
    leases = handled("Lease")
    setup.now[0] += 3.0  # the lease was granted at most 1.1 s before the request that used it
    _sent, plan = await send(setup, chat(f"{WORDS} before renewal"))
    assert plan.reason == "leased" and handled("Lease") == leases  # the request path never asks Lease
    setup.held.release.set()  # the keeper renews: the model was requested since
    await wait_until(lambda: handled("Lease") == leases + 1 and setup.held.paused.is_set())
    setup.now[0] += 2.5  # past the first lease's expiry, within the renewed one
    _sent, plan = await send(setup, chat(f"{WORDS} after renewal"))
    assert plan.reason == "leased" and (plan.num_ctx, plan.num_batch) == (first.num_ctx, first.num_batch)


async def test_an_off_path_answer_that_differs_ends_the_lease(setup: Setup, pool: asyncpg.Pool) -> None:
    first = await leased(setup)
    other = first.num_ctx * 2
    async with create_channel(setup.tuner.address) as channel:
        await tuner_pb2_grpc.TunerStub(channel).Pin(
            tuner_pb2.PinRequest(model=MODEL, template_id=1, num_ctx=other, num_batch=first.num_batch)
        )
    revoked = sample("optimizer_plugin_leases_total", result="revoked")
    _sent, plan = await send(setup, chat(f"{WORDS} pinned meanwhile"))
    assert plan.reason == "leased" and not plan.decision_id  # the tuner decided otherwise: no decision id
    assert sample("optimizer_plugin_leases_total", result="revoked") == revoked + 1
    _sent, plan = await send(setup, chat(f"{WORDS} after the pin"))
    assert plan.reason == "applied" and plan.num_ctx == other  # Recommend on the request path carries it out


async def test_tuner_down_the_lease_expires_and_requests_fail_open_as_before(setup: Setup) -> None:
    first = await leased(setup)
    await setup.tuner.server.stop(0)
    _sent, plan = await send(setup, chat(f"{WORDS} tuner gone"))
    assert plan.reason == "leased" and not plan.decision_id  # within the lease: Match only
    setup.now[0] += 5.0
    sent, plan = await setup.core.prepare(chat(f"{WORDS} lease over"))
    assert plan.reason == "sticky"  # as without leases: the options the model's last request carried
    assert sent["options"] == {"num_ctx": first.num_ctx, "num_batch": first.num_batch}


async def test_lease_bad_input_and_refusals(setup: Setup) -> None:
    async with create_channel(setup.tuner.address) as channel:
        stub = tuner_pb2_grpc.TunerStub(channel)
        for request in (
            tuner_pb2.LeaseRequest(),
            tuner_pb2.LeaseRequest(model="two words"),
            tuner_pb2.LeaseRequest(model="m", ollama_host="bad\x00host"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Lease(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and caught.value.details()
        refused = await stub.Lease(tuner_pb2.LeaseRequest(model="never-seen"))
        assert not refused.granted and refused.reason_code == "unknown_model" and not refused.rules
        first = await leased(setup)
        granted = await stub.Lease(tuner_pb2.LeaseRequest(model=MODEL))
        assert granted.granted and (granted.num_ctx, granted.num_batch) == (first.num_ctx, first.num_batch)
        assert [rule.template_id for rule in granted.rules] == [1] and granted.ttl_ms > 0
        await stub.Pin(tuner_pb2.PinRequest(model=MODEL, template_id=1, num_ctx=first.num_ctx))
        assert not (await stub.Lease(tuner_pb2.LeaseRequest(model=MODEL))).rules  # a pinned template is left out


async def test_an_answer_that_filled_its_context_ends_the_lease(setup: Setup) -> None:
    """The tuner may grow the context or raise the template's floor from that outcome: until it has it, the
    model's requests ask Recommend."""
    first = await leased(setup)
    sent, plan = await setup.core.prepare(chat(f"{WORDS} long answer"))
    assert plan.reason == "leased"
    revoked = sample("optimizer_plugin_leases_total", result="revoked")
    setup.core.observe(sent, {**answered(sent), "eval_count": first.num_ctx}, plan)
    await setup.core.flush()
    assert sample("optimizer_plugin_leases_total", result="revoked") == revoked + 1
    leases = handled("Lease")
    for _ in range(2):  # no new lease within a second of the outcome
        recommends = handled("Recommend")
        _sent, plan = await send(setup, chat(f"{WORDS} after it"))
        assert plan.reason != "leased" and handled("Recommend") >= recommends + 1
    assert handled("Lease") == leases
    assert (await leased(setup)).reason == "leased"  # then leases again
