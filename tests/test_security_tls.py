"""Bearer-token auth on both services and TLS / mTLS on every channel, with certificates made here."""
from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plugin_fixtures import plugin_config
from tuner_fixtures import fast_settings

from matcher_service.main import MatcherServer, start_matcher
from matcher_service.settings import MatcherSettings
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc, tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.health_check import EXIT_SERVING, check
from proxy_plugin.core import OptimizerCore
from tuner_service.main import RunningTuner, start_tuner

TOKEN = "tls-test-token"
MODEL = "llama3.1:8b"


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str  # signed by another CA
    rogue_key: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key) -> tuple[str, str]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_ca_key = _key(), _key()
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    ca_path, _ = _write(d, "ca", ca, ca_key)
    skey, ckey, rkey = _key(), _key(), _key()
    server = _write(d, "server", _cert("localhost", skey, "test-ca", ca_key, ca=False, server=True), skey)
    client = _write(d, "client", _cert("gateway", ckey, "test-ca", ca_key, ca=False), ckey)
    rogue = _write(d, "rogue", _cert("gateway", rkey, "rogue-ca", rogue_ca_key, ca=False), rkey)
    return Pki(ca_path, *server, *client, *rogue)


def _server_cfg(pki: Pki | None, *, mtls: bool = False, token: str = "") -> ServerConfig:
    if pki is None:
        return ServerConfig(listen="127.0.0.1:0", metrics_port=0, auth_token=token)
    return ServerConfig(listen="127.0.0.1:0", metrics_port=0, auth_token=token, tls_cert=pki.server_cert,
                        tls_key=pki.server_key, tls_client_ca=pki.ca if mtls else "")


@pytest.fixture
async def services(request, pool: asyncpg.Pool, pki: Pki) -> AsyncIterator[tuple[MatcherServer, RunningTuner]]:
    mode = request.param
    cfg = _server_cfg(None if mode == "plain" else pki, mtls=mode == "mtls", token=TOKEN)
    matcher = await start_matcher(pool, cfg, MatcherSettings())
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
    core = OptimizerCore(plugin_config(matcher.address, tuner.address, auth_token=TOKEN, budget_ms=10_000,
                                       call_timeout_ms=5_000, **good))  # cold channels: TLS handshake
    request = {"model": MODEL, "messages": [{"role": "user", "content": "summarise the quarterly report " * 20}]}
    try:
        sent, decision = await core.prepare(request, "chat")
        assert decision.reason == "tuner_passthrough"  # both calls answered (an error would say rpc_error)
        assert decision.fingerprints is not None and decision.decision_id
        core.observe(request, {"done": True, "prompt_eval_count": 250, "eval_count": 20}, decision, latency_s=0.1)
        await core.flush()
    finally:
        await core.close()
    assert await tuner.core.pool.fetchval("SELECT count(*) FROM matcher_template") == 1
    await tuner.core.writer.flush()
    assert await tuner.core.pool.fetchval("SELECT count(*) FROM tuner_outcome") == 1
