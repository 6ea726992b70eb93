"""Server limits that follow the caller and the configuration: the Match database budget fits the caller's
deadline, the gRPC receive limit follows the text cap, and keepalive is set on both ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from matcher_service.main import MatcherServer, start_matcher
from matcher_service.settings import MatcherSettings
from ollama_optimizer.channels import KEEPALIVE, Keepalive, create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

from matcher_fixtures import prompt

MODEL = "llama3.1:8b"
MiB = 1 << 20


@asynccontextmanager
async def matcher_with(
    pool: asyncpg.Pool, **settings: object
) -> AsyncIterator[tuple[MatcherServer, matcher_pb2_grpc.MatcherStub]]:
    server = await start_matcher(
        pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), replace(MatcherSettings(), **settings)
    )
    try:
        async with create_channel(server.address) as channel:
            yield server, matcher_pb2_grpc.MatcherStub(channel)
    finally:
        await server.stop(0)


async def test_match_answers_within_the_callers_deadline_when_the_database_stalls(pool, dsn) -> None:
    """A database budget far above the caller's deadline: Match still answers "not matched" in time."""
    async with matcher_with(pool, match_db_timeout=30.0) as (_server, stub):
        blocker = await asyncpg.connect(dsn)
        try:
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE matcher_fingerprint IN ACCESS EXCLUSIVE MODE")
                # a deadline far below the database budget, and still long enough for a loaded host to answer
                answer = await stub.Match(matcher_pb2.MatchRequest(model=MODEL, text=prompt(1, 300)), timeout=5.0)
                assert not answer.matched and answer.prompt_units > 0
        finally:
            await blocker.close()


async def test_the_receive_limit_follows_the_text_cap(pool) -> None:
    async with matcher_with(pool, max_text_bytes=6 * MiB) as (_server, stub):
        words = prompt(2, 400) + " "
        text = words * (5 * MiB // len(words))
        answer = await stub.Match(matcher_pb2.MatchRequest(model=MODEL, text=text), timeout=30)
        assert answer.prompt_units > 0
        with pytest.raises(grpc.aio.AioRpcError) as too_large:
            await stub.Match(matcher_pb2.MatchRequest(model=MODEL, text="x" * (6 * MiB + 1)), timeout=30)
        assert too_large.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "MATCHER_MAX_TEXT_BYTES" in (too_large.value.details() or "")


def test_servers_accept_the_pings_clients_send() -> None:
    """A server answers pings more frequent than its minimum interval with GOAWAY too_many_pings."""
    client = dict(KEEPALIVE.client_options())
    server = dict(KEEPALIVE.server_options())
    assert client["grpc.keepalive_permit_without_calls"] == server["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
    assert server["grpc.keepalive_time_ms"] > 0 and client["grpc.http2.max_pings_without_data"] == 0


class Blackhole:
    """A TCP relay that, once ``swallow`` is set, keeps the connections open and drops every byte (a peer
    gone without closing: a failover, a lost NAT entry)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.swallow = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Blackhole:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.swallow:
                writer.write(data)
                await writer.drain()

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def test_an_idle_client_notices_a_vanished_server(pool) -> None:
    async with matcher_with(pool) as (server, _stub):
        relay = await Blackhole(server.port).start()
        try:
            quick = Keepalive(time_ms=200, timeout_ms=200)
            async with create_channel(f"127.0.0.1:{relay.port}", keepalive=quick) as channel:
                check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert check.status == health_pb2.HealthCheckResponse.SERVING
                assert channel.get_state() is grpc.ChannelConnectivity.READY
                relay.swallow = True  # no call in flight: only keepalive pings can find out
                await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 90)
                assert channel.get_state() is not grpc.ChannelConnectivity.READY
        finally:
            await relay.stop()
