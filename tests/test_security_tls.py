"""Bearer-token auth on both services and TLS / mTLS on every channel, with certificates made here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from matcher_service.main import MatcherServer, start_matcher
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc, tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.health_check import EXIT_SERVING, check
from proxy_plugin.core import OptimizerCore
from tuner_service.main import RunningTuner, start_tuner

from matcher_fixtures import TEST_MATCHER_SETTINGS
from pki_fixtures import Pki
from plugin_fixtures import plugin_config
from tuner_fixtures import fast_settings

TOKEN = "tls-test-token"
MODEL = "llama3.1:8b"


def _server_cfg(pki: Pki | None, *, mtls: bool = False, token: str = "") -> ServerConfig:
    if pki is None:
        return ServerConfig(listen="127.0.0.1:0", metrics_port=0, auth_token=token)
    return ServerConfig(
        listen="127.0.0.1:0",
        metrics_port=0,
        auth_token=token,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca if mtls else "",
    )


@pytest.fixture
async def services(request, pool: asyncpg.Pool, pki: Pki) -> AsyncIterator[tuple[MatcherServer, RunningTuner]]:
    mode = request.param
    cfg = _server_cfg(None if mode == "plain" else pki, mtls=mode == "mtls", token=TOKEN)
    matcher = await start_matcher(pool, cfg, TEST_MATCHER_SETTINGS)
    tuner = await start_tuner(pool, cfg, fast_settings())
    yield matcher, tuner
    await tuner.stop(0)
    await matcher.stop(0)


@pytest.mark.parametrize("services", ["plain"], indirect=True)
async def test_bearer_token_on_both_services_health_stays_open(services) -> None:
    matcher, tuner = services
    for address, call in ((matcher.address, _match_call), (tuner.address, _recommend_call)):
        for token in ("", "wrong-token"):
            async with create_channel(address, token=token) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(ch)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with create_channel(address, token=TOKEN) as ch:
            await call(ch)
        async with create_channel(address) as ch:  # probes carry no token
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def _match_call(ch: grpc.aio.Channel) -> None:
    await matcher_pb2_grpc.MatcherStub(ch).Match(matcher_pb2.MatchRequest(model=MODEL, text="hi there"), timeout=5)


async def _recommend_call(ch: grpc.aio.Channel) -> None:
    await tuner_pb2_grpc.TunerStub(ch).Recommend(tuner_pb2.RecommendRequest(model=MODEL), timeout=5)


@pytest.mark.parametrize("services", ["tls"], indirect=True)
async def test_tls_channels_verify_the_server(services, pki) -> None:
    matcher, tuner = services
    for address, call in ((matcher.address, _match_call), (tuner.address, _recommend_call)):
        async with create_channel(address, token=TOKEN, tls_ca=pki.ca) as ch:
            await call(ch)
        async with create_channel(address, token=TOKEN) as ch:  # plaintext to a TLS port
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(ch)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        async with create_channel(address, token=TOKEN, tls_ca=pki.rogue_cert) as ch:  # untrusted server
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(ch)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (await check(address, timeout=5, tls_ca=pki.ca))[0] == EXIT_SERVING


@pytest.mark.parametrize("services", ["mtls"], indirect=True)
async def test_mtls_every_channel_plugin_and_health_cli(services, pki) -> None:
    matcher, tuner = services
    good = dict(tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    for address, call in ((matcher.address, _match_call), (tuner.address, _recommend_call)):
        for bad in (dict(tls_ca=pki.ca), dict(tls_ca=pki.ca, tls_cert=pki.rogue_cert, tls_key=pki.rogue_key)):
            async with create_channel(address, token=TOKEN, **bad) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(ch)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (await check(address, timeout=5, **good))[0] == EXIT_SERVING
        assert (await check(address, timeout=0.5, tls_ca=pki.ca))[0] != EXIT_SERVING

    # The plugin core: request path (Match, Recommend) and telemetry (Observe, Report) over mTLS + token.
    core = OptimizerCore(
        plugin_config(matcher.address, tuner.address, auth_token=TOKEN, budget_ms=10_000, call_timeout_ms=5_000, **good)
    )  # cold channels: TLS handshake
    request = {"model": MODEL, "messages": [{"role": "user", "content": "summarise the quarterly report " * 20}]}
    try:
        _sent, decision = await core.prepare(request, "chat")
        assert decision.reason == "tuner_passthrough"  # both calls answered (an error would say rpc_error)
        assert decision.fingerprints is not None and decision.decision_id
        core.observe(request, {"done": True, "prompt_eval_count": 250, "eval_count": 20}, decision, latency_s=0.1)
        await core.flush()
    finally:
        await core.close()
    assert await tuner.core.pool.fetchval("SELECT count(*) FROM matcher_template") == 1
    await tuner.core.writer.flush()
    assert await tuner.core.pool.fetchval("SELECT count(*) FROM tuner_outcome") == 1
