"""Poisoning resistance: unauthenticated, unknown or flooding sources cannot move a template, and a
source is the identity the transport authenticated (a per-source token, an mTLS certificate, the peer
address), never a name the client writes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.settings_env import ConfigError
from ollama_optimizer.source_tokens import SourceTokens
from tuner_service.decision_token import DecisionFields, DecisionSigner
from tuner_service.guard import GuardSettings, Refused, ReportGuard, source_of
from tuner_service.main import RunningTuner, start_tuner

from pki_fixtures import Pki
from tuner_fixtures import fast_settings, make_outcome

MODEL = "llama3.1:8b"
TOKEN = "poison-test-token"
CLAIM = "x-optimizer-source"  # what clients used to be trusted for: a name they write themselves


async def _start(
    pool: asyncpg.Pool, guard: GuardSettings, token: str = "", pki: Pki | None = None, decision_key: str = ""
) -> RunningTuner:
    tls = dict(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca) if pki else {}
    cfg = ServerConfig(listen="127.0.0.1:0", metrics_port=0, auth_token=token, **tls)
    settings = dataclasses.replace(fast_settings(), decision_key=decision_key)
    return await start_tuner(pool, cfg, settings, guard=guard)


@pytest.fixture
async def guarded(pool: asyncpg.Pool, pki: Pki) -> AsyncIterator[RunningTuner]:
    guard = GuardSettings(frozenset({"cert:gw-1", "cert:gw-2"}), rate_per_second=1e-6, burst=5)
    running = await _start(pool, guard, TOKEN, pki)
    yield running
    await running.stop(0)


async def _state(running: RunningTuner, pool: asyncpg.Pool) -> tuple[int, int]:
    """(observations in memory for template 7, outcome rows stored) after a flush."""
    await running.core.writer.flush()
    model = running.core.policy.models.get(MODEL)
    template = model.templates.get(7) if model else None
    return (template.observations if template else 0), await pool.fetchval("SELECT count(*) FROM tuner_outcome")


def _report(n: int) -> tuner_pb2.ReportRequest:
    return tuner_pb2.ReportRequest(outcomes=[make_outcome(template_id=7) for _ in range(n)])


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("optimizer_tuner_reports_refused_total", {"reason": reason}) or 0.0


async def _call(
    address: str, tls: dict[str, str], n: int, token: str = TOKEN, claim: str | None = None
) -> tuner_pb2.ReportResponse:
    async with create_channel(address, token=token, **tls) as channel:
        metadata = ((CLAIM, claim),) if claim else None
        return await tuner_pb2_grpc.TunerStub(channel).Report(_report(n), metadata=metadata, timeout=5)


async def test_unauthenticated_unknown_and_self_named_sources_cannot_move_a_template(guarded, pool, pki) -> None:
    for token, tls, claim, code in (
        ("", pki.client("gw-1"), None, grpc.StatusCode.UNAUTHENTICATED),
        ("wrong", pki.client("gw-1"), None, grpc.StatusCode.UNAUTHENTICATED),
        (TOKEN, pki.client("intruder"), None, grpc.StatusCode.PERMISSION_DENIED),
        (TOKEN, pki.client("intruder"), "gw-1", grpc.StatusCode.PERMISSION_DENIED),
        (TOKEN, pki.client("intruder"), "cert:gw-1", grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(guarded.address, tls, 3, token, claim)
        assert err.value.code() == code, (token, claim)
    assert await _state(guarded, pool) == (0, 0)
    assert (await _call(guarded.address, pki.client("gw-1"), 3)).accepted == 3
    assert await _state(guarded, pool) == (3, 3)


async def test_report_rate_limit_is_per_authenticated_source_whatever_it_claims(guarded, pool, pki) -> None:
    before = _refused("rate_limited")
    gw1, gw2 = pki.client("gw-1"), pki.client("gw-2")
    assert (await _call(guarded.address, gw1, 5)).accepted == 5
    for claim in (None, "fresh-name-1", "fresh-name-2"):  # a new claimed name is no new bucket
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(guarded.address, gw1, 1, claim=claim)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await _call(guarded.address, gw2, 2)).accepted == 2  # its own bucket
    assert _refused("rate_limited") == before + 3
    assert await _state(guarded, pool) == (7, 7)


GW1_TOKEN, GW2_TOKEN, GW3_TOKEN = "gw1-" + "a" * 28, "gw2-" + "b" * 28, "gw3-" + "c" * 28
SOURCE_TOKENS = f"gw-1={GW1_TOKEN}, gw-2={GW2_TOKEN}\ngw-3={GW3_TOKEN}"


@pytest.fixture
async def token_guarded(pool: asyncpg.Pool) -> AsyncIterator[RunningTuner]:
    """Per-source tokens without mTLS and without a shared token; gw-3 has a token but is not allowed."""
    cfg = ServerConfig(listen="127.0.0.1:0", metrics_port=0, source_tokens=SourceTokens.parse(SOURCE_TOKENS))
    guard = GuardSettings(frozenset({"token:gw-1", "token:gw-2"}), rate_per_second=1e-6, burst=5)
    running = await start_tuner(pool, cfg, fast_settings(), guard=guard)
    yield running
    await running.stop(0)


async def test_a_per_source_token_names_the_source_whatever_the_client_claims(token_guarded, pool) -> None:
    for token, claim, code in (
        ("", "gw-1", grpc.StatusCode.UNAUTHENTICATED),
        ("gw1-" + "x" * 28, "gw-1", grpc.StatusCode.UNAUTHENTICATED),
        (GW3_TOKEN, "token:gw-1", grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(token_guarded.address, {}, 1, token, claim)
        assert err.value.code() == code, (token, claim)
    assert await _state(token_guarded, pool) == (0, 0)
    assert (await _call(token_guarded.address, {}, 5, GW1_TOKEN, claim="token:gw-2")).accepted == 5
    for claim in (None, "gw-2", "token:gw-2", "fresh-name"):  # gw-1's bucket is empty, whatever it claims
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(token_guarded.address, {}, 1, GW1_TOKEN, claim)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, claim
    assert (await _call(token_guarded.address, {}, 5, GW2_TOKEN)).accepted == 5  # its own, untouched bucket
    assert await _state(token_guarded, pool) == (10, 10)


def test_source_tokens_are_checked_when_read(tmp_path, monkeypatch) -> None:
    tokens = SourceTokens.parse(SOURCE_TOKENS + f",gw-1=gw1-rotated-{'d' * 20}")  # a second token for gw-1
    assert [tokens.source(t) for t in (GW1_TOKEN, f"gw1-rotated-{'d' * 20}", GW3_TOKEN, "unknown", "")] == [
        "token:gw-1",
        "token:gw-1",
        "token:gw-3",
        "",
        "",
    ]
    for bad, says in (
        ("gw-1", "expected name=token"),
        ("gw 1=" + "a" * 20, "expected name=token"),
        ("gw-1=short", "at least 16"),
        (f"gw-1={GW1_TOKEN},gw-2={GW1_TOKEN}", "already names 'gw-1'"),
    ):
        with pytest.raises(ValueError, match=says):
            SourceTokens.parse(bad)
    secret = tmp_path / "source-tokens"
    secret.write_text(SOURCE_TOKENS + "\n")
    monkeypatch.setenv("OPTIMIZER_SOURCE_TOKENS_FILE", str(secret))
    monkeypatch.delenv("OPTIMIZER_SOURCE_TOKENS", raising=False)
    assert ServerConfig.tuner(os.environ).source_tokens.source(GW2_TOKEN) == "token:gw-2"
    monkeypatch.setenv("OPTIMIZER_SOURCE_TOKENS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="OPTIMIZER_SOURCE_TOKENS_FILE: cannot read"):
        ServerConfig.tuner(os.environ)
    monkeypatch.setenv("OPTIMIZER_SOURCE_TOKENS", "gw-1=short")
    with pytest.raises(ConfigError, match=r"OPTIMIZER_SOURCE_TOKENS: .*at least 16") as error:
        ServerConfig.tuner(os.environ)
    assert "short" not in str(error.value)  # a secret is never echoed


async def test_without_mtls_the_source_is_the_peer_host(pool) -> None:
    running = await _start(pool, GuardSettings(frozenset({"peer:127.0.0.1"}), rate_per_second=0, burst=0))
    try:
        assert (await _call(running.address, {}, 2, token="", claim="gw-1")).accepted == 2
    finally:
        await running.stop(0)


def test_token_bucket_refills_and_sources_come_from_the_transport() -> None:
    now = [0.0]
    guard = ReportGuard(GuardSettings(frozenset(), rate_per_second=10.0, burst=10), clock=lambda: now[0])
    guard.check("a", 10)
    with pytest.raises(Refused):
        guard.check("a", 1)
    now[0] = 0.5  # 5 tokens back
    guard.check("a", 5)
    assert source_of(None, "ipv4:10.0.0.7:51234") == "peer:10.0.0.7"
    assert source_of(None, "ipv6:[::1]:51234") == "peer:[::1]"
    assert source_of([b"gw-9"], "ipv4:10.0.0.7:1") == "cert:gw-9"


async def test_decision_ids_are_verified_not_trusted(pool) -> None:
    """Only an id this key issued lends its fields to the stored outcome: a forged flag, an altered
    reason, or the unsigned positional format of earlier versions ("seq.index.flags") count as none."""
    running = await _start(pool, GuardSettings(frozenset(), rate_per_second=0, burst=0), decision_key="shared-secret")
    try:
        core = running.core
        issued = core.signer.issue("ab1", DecisionFields("keep_loaded", reload_avoided=True))
        forged = issued.replace(".a.", ".ap.")
        relabelled = issued.replace("keep_loaded", "avoid_reload")
        outcomes = {"issued": issued, "forged": forged, "relabelled": relabelled, "legacy": "abcdef-1.8.6"}
        core.report([make_outcome(outcome_id=name, decision_id=did) for name, did in outcomes.items()])
        await core.writer.flush()
        rows = {
            r["outcome_id"]: (r["reason_code"], r["reload_avoided"], r["truncation_prevented"])
            for r in await pool.fetch("SELECT * FROM tuner_outcome")
        }
        assert rows == {
            "issued": ("keep_loaded", True, False),
            "forged": ("", False, False),
            "relabelled": ("", False, False),
            "legacy": ("", False, False),
        }
        assert DecisionSigner(b"shared-secret").verify(issued) == DecisionFields("keep_loaded", reload_avoided=True)
        assert DecisionSigner(b"another-key").verify(issued) is None
    finally:
        await running.stop(0)
