"""Entry points: ``serve()`` for `ollama-optimizer matcher`, ``start_matcher()`` in-process (tests, benches)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import asyncpg

from ollama_optimizer.config import DatabaseConfig, ServerConfig
from ollama_optimizer.db import open_database
from ollama_optimizer.db_health import follow_database
from ollama_optimizer.fingerprint_kernel import KernelSettings, warm_up_at_start
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2_grpc
from ollama_optimizer.server import (
    DEFAULT_MAX_RECEIVE_BYTES,
    BindError,
    RunningServer,
    not_serving_while_waiting,
    serve_until_signal,
    start_server,
)
from ollama_optimizer.settings_env import load

from .maintenance import Maintenance
from .service import SERVICE_NAME, MatcherService
from .settings import MatcherSettings
from .store import SESSION_SETTINGS, keep_session

log = logging.getLogger(__name__)
RECEIVE_HEADROOM_BYTES = 1 << 20  # the other request fields, and texts somewhat over the cap


def receive_limit(settings: MatcherSettings) -> int:
    """gRPC's request size limit: above the text cap, so an oversize text is answered by validation."""
    return max(DEFAULT_MAX_RECEIVE_BYTES, settings.max_text_bytes + RECEIVE_HEADROOM_BYTES)


@dataclass
class MatcherServer:
    """A running matcher: gRPC server, servicer and (optionally) the maintenance job."""

    running: RunningServer
    service: MatcherService
    maintenance: Maintenance | None

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    async def stop(self, grace: float = 1.0) -> None:
        """NOT_SERVING, drain for ``grace`` seconds, stop; then stop the maintenance job."""
        await self.running.stop(grace)
        if self.maintenance is not None:
            await self.maintenance.stop()


async def start_matcher(
    pool: asyncpg.Pool,
    server_cfg: ServerConfig,
    settings: MatcherSettings | None = None,
    *,
    serve_metrics: bool = False,
    maintenance: bool = False,
) -> MatcherServer:
    """Start a matcher on ``server_cfg.listen`` (port 0 = any) over an existing pool (migrated)."""
    settings = settings or MatcherSettings()
    service = MatcherService(pool, settings)
    running = await start_server(
        server_cfg,
        [lambda server: matcher_pb2_grpc.add_MatcherServicer_to_server(service, server)],
        (SERVICE_NAME,),
        serve_metrics=serve_metrics,
        max_receive_bytes=receive_limit(settings),
    )
    follow_database(running, pool, (SERVICE_NAME,))  # no Match without the database
    job = Maintenance(pool, settings) if maintenance else None
    if job is not None:
        job.start()
    return MatcherServer(running, service, job)


async def serve() -> int:
    """Run the matcher until SIGTERM/SIGINT (embedded Postgres when no DSN); returns the exit code. A bad
    setting raises ConfigError before anything starts."""
    settings, server_cfg = load(MatcherSettings, os.environ), ServerConfig.matcher(os.environ)
    warm_up_at_start(load(KernelSettings, os.environ))
    async with open_database(
        load(DatabaseConfig, os.environ),
        server_settings=SESSION_SETTINGS,
        reset=keep_session,
        while_waiting=lambda: not_serving_while_waiting(server_cfg, (SERVICE_NAME,)),
    ) as db:
        try:
            matcher = await start_matcher(db.pool, server_cfg, settings, serve_metrics=True, maintenance=True)
        except BindError as exc:
            log.error("%s", exc)
            return 1
        await serve_until_signal(matcher.running, server_cfg.grace_seconds)
        if matcher.maintenance is not None:
            await matcher.maintenance.stop()
    return 0
