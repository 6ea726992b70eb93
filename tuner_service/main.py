"""Entry points: `ollama-optimizer tuner` (serve) and an in-process starter for tests and benchmarks."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import asyncpg

from ollama_optimizer.config import DatabaseConfig, ServerConfig
from ollama_optimizer.db import create_pool, open_database
from ollama_optimizer.db_health import follow_database
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.server import RunningServer, not_serving_while_waiting, serve_until_signal, start_server
from ollama_optimizer.settings_env import load

from .core import TunerCore
from .guard import GuardSettings, ReportGuard
from .service import TunerServicer
from .settings import TunerSettings

log = logging.getLogger(__name__)
SERVICE_NAME = tuner_pb2.DESCRIPTOR.services_by_name["Tuner"].full_name


@dataclass
class RunningTuner:
    """A started tuner: ``port`` is the bound gRPC port, ``core`` the in-memory state and writer."""

    server: RunningServer
    core: TunerCore
    owned_pool: asyncpg.Pool | None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float = 1.0) -> None:
        """NOT_SERVING, drain RPCs, flush what is buffered, release the writer lock, close an owned pool."""
        await self.server.stop(grace)
        await self.core.stop()
        if self.owned_pool is not None:
            await self.owned_pool.close()


async def start_tuner(
    pool_or_dsn: asyncpg.Pool | str,
    server_cfg: ServerConfig,
    settings: TunerSettings | None = None,
    *,
    serve_metrics: bool = False,
    guard: GuardSettings | None = None,
) -> RunningTuner:
    """Start a tuner on an existing pool (or a DSN: a pool is created and owned); migrations must be applied."""
    owned = await create_pool(pool_or_dsn, 2, 8) if isinstance(pool_or_dsn, str) else None
    pool = owned or pool_or_dsn
    assert isinstance(pool, asyncpg.Pool)
    settings = settings or TunerSettings()
    core = TunerCore(pool, settings)
    await core.start()
    servicer = TunerServicer(core, ReportGuard(guard or settings.guard), server_cfg.source_tokens)
    try:
        server = await start_server(
            server_cfg,
            [lambda s: tuner_pb2_grpc.add_TunerServicer_to_server(servicer, s)],
            (SERVICE_NAME,),
            serve_metrics=serve_metrics,
        )
        follow_database(server, pool, ())  # Recommend is served from memory while the database is down
    except BaseException:
        await core.stop()
        if owned is not None:
            await owned.close()
        raise
    return RunningTuner(server, core, owned)


async def serve() -> int:
    """Run the tuner until SIGTERM/SIGINT; returns the exit code. A bad setting raises ConfigError before
    anything starts."""
    settings, server_cfg = load(TunerSettings, os.environ), ServerConfig.tuner(os.environ)
    async with open_database(
        load(DatabaseConfig, os.environ), while_waiting=lambda: not_serving_while_waiting(server_cfg, (SERVICE_NAME,))
    ) as db:
        tuner = await start_tuner(db.pool, server_cfg, settings, serve_metrics=True)
        role = "writer" if tuner.core.writer.is_writer else "read-only standby"
        log.info("tuner serving on %s as %s", server_cfg.listen, role)
        await serve_until_signal(tuner.server, server_cfg.grace_seconds)
        await tuner.core.stop()
    return 0
