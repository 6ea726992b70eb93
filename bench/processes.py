"""The system under test as child processes, for the benchmarks that kill, hang and restart them
(bench/faults.py, bench/soak.py): Postgres, the optimizer's services, the Ollama emulator and the gateway,
each in its own session with a log file, on ports from bench.ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import asyncpg

from bench.ports import free_port
from ollama_optimizer.db import DB_UNAVAILABLE_ERRORS
from ollama_optimizer.health_check import EXIT_SERVING, check
from ollama_optimizer.migrations import apply_migrations

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ollama_optimizer.cli"]


async def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.1) -> float:  # type: ignore[no-untyped-def]
    """Poll an async predicate until true; returns seconds waited, raises TimeoutError with ``what``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await predicate():
        if loop.time() - start > timeout_s:
            raise TimeoutError(f"{what} not reached in {timeout_s}s")
        await asyncio.sleep(every_s)
    return loop.time() - start


class Process:
    """One child process (own session) with a log file; kill -9, SIGSTOP/SIGCONT and restart."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept by the child)
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
            user=self.user,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process and its children (its session's process group)."""
        if (self.proc is not None and self.proc.poll() is None) or sig == signal.SIGKILL:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self) -> None:
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal_group(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()


class Postgres(Process):
    """A standalone postmaster (pgserver's binaries) on a loopback TCP port; data survives restarts."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        import pgserver
        from pgserver._commands import POSTGRES_BIN_PATH

        self.data, self.port = root / "pgdata", free_port()
        if not (self.data / "PG_VERSION").exists():  # pgserver's initdb (as user "pgserver" when root)
            pgserver.get_server(self.data, cleanup_mode="stop").cleanup()
        argv = [
            str(Path(POSTGRES_BIN_PATH) / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
            "-c",
            "track_commit_timestamp=on",
        ]
        super().__init__("postgres", argv, os.environ, log_dir)
        self.user = "pgserver" if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def ready(self) -> bool:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=1)
        except DB_UNAVAILABLE_ERRORS:
            return False
        await conn.close()
        return True


class Service(Process):
    """``ollama-optimizer matcher|tuner`` with its gRPC and metrics ports."""

    def __init__(self, kind: str, env: Mapping[str, str], log_dir: Path, name: str = "") -> None:
        self.grpc_port, self.metrics_port = free_port(), free_port()
        prefix = kind.upper()
        env = {
            **env,
            f"{prefix}_LISTEN": f"127.0.0.1:{self.grpc_port}",
            f"{prefix}_METRICS_PORT": str(self.metrics_port),
        }
        super().__init__(name or kind, [*CLI, kind], env, log_dir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    async def ready(self) -> bool:
        code, _ = await check(self.address, timeout=1.0)
        return code == EXIT_SERVING


async def start_postgres(root: Path) -> Postgres:
    """A migrated Postgres with its data under ``root``; every process logs to ``root``/logs."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    postgres = Postgres(root, logs)
    postgres.start()
    await wait_for(postgres.ready, 60, "postgres up")
    await apply_migrations(postgres.dsn)
    return postgres


def service_env(dsn: str, log_level: str, **extra: str) -> dict[str, str]:
    """This process's environment for the optimizer's services on ``dsn``, plus ``extra`` variables."""
    return {**os.environ, "OPTIMIZER_DSN": dsn, "OPTIMIZER_LOG_LEVEL": log_level, **extra}


def emulator_process(log_dir: Path, port: int, time_scale: float, *flags: str) -> Process:
    """``python -m bench.ollama_sim`` on ``port`` (not started); ``flags`` are further emulator flags."""
    argv = [sys.executable, "-m", "bench.ollama_sim", "--port", str(port), "--time-scale", str(time_scale), *flags]
    return Process("emulator", argv, os.environ, log_dir)


def gateway_process(
    log_dir: Path, port: int, upstream_port: int, metrics_port: int, env: Mapping[str, str], **extra: str
) -> Process:
    """``ollama-optimizer gateway`` on ``port`` in front of ``upstream_port`` (not started), probes off;
    ``extra`` variables (MATCHER_ADDRESS, TUNER_ADDRESS, OPT_*) complete ``env``."""
    argv = [*CLI, "gateway", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}"]
    gateway_env = {**env, "GATEWAY_METRICS_PORT": str(metrics_port), "OPT_PROBES": "false", **extra}
    return Process("gateway", argv, gateway_env, log_dir)


async def relaying(url: str) -> bool:
    """Whether the gateway at ``url`` answers /api/tags (it relays to its upstream)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(url + "/api/tags") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False
