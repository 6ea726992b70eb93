"""Start-up against a Postgres that is not there yet, refuses us, or never comes: real processes, real Postgres.

The DSN points at a loopback TCP port; a forwarder to the session's embedded Postgres (a Unix
socket) starts listening there only when the test decides the database "comes up".
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from grpc_health.v1 import health_pb2

from bench.ports import free_port
from matcher_service.service import SERVICE_NAME as MATCHER_SERVICE
from tuner_service.main import SERVICE_NAME as TUNER_SERVICE

from health_fixtures import reach

PASSWORD = "s3cret-never-logged"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLL_BOUND_SECONDS = 90.0  # a bound for polling loops on a busy 2-core host, never a timing assertion
SERVICES = {
    "matcher": (MATCHER_SERVICE, "MATCHER_LISTEN", "MATCHER_METRICS_PORT"),
    "tuner": (TUNER_SERVICE, "TUNER_LISTEN", "TUNER_METRICS_PORT"),
}


def _socket_path(dsn: str) -> Path:
    """The Unix socket of the embedded Postgres behind a conftest DSN (``...?host=<dir>``)."""
    socket_dir = Path(parse_qs(urlsplit(dsn).query)["host"][0])
    sockets = [p for p in socket_dir.glob(".s.PGSQL.*") if not p.name.endswith(".lock")]
    assert len(sockets) == 1, sockets
    return sockets[0]


def _database(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


class Forwarder:
    """127.0.0.1:port -> a Unix socket; listens only once ``start()`` is called."""

    def __init__(self, port: int, target: Path) -> None:
        self.port, self.target = port, target
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.target))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _spawn(command: str, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ollama_optimizer.cli",
            command,
            env={**os.environ, **env},
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def _exited(proc: asyncio.subprocess.Process, log: Path) -> str:
    """Resolves once ``proc`` ends, to what it said."""
    await proc.wait()
    return f"exited with {proc.returncode}:\n{log.read_text()}"


async def _until(
    condition: Callable[[], Awaitable[bool]], proc: asyncio.subprocess.Process, log: Path, what: str
) -> None:
    """Poll ``condition`` (bounded) while asserting that ``proc`` stays alive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_BOUND_SECONDS
    while True:
        assert proc.returncode is None, f"exited with {proc.returncode} before {what}:\n{log.read_text()}"
        if await condition():
            return
        assert loop.time() < deadline, f"never {what}:\n{log.read_text()}"
        await asyncio.sleep(0.1)


def _waiting_env(dsn: str, timeout_s: int) -> dict[str, str]:
    """Environment of a matcher (or migrate) that waits up to ``timeout_s`` for the database at ``dsn``."""
    return {
        "OPTIMIZER_DSN": dsn,
        "OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS": str(timeout_s),
        "MATCHER_LISTEN": f"127.0.0.1:{free_port()}",
        "MATCHER_METRICS_PORT": str(free_port()),
    }


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    return await asyncio.wait_for(proc.wait(), POLL_BOUND_SECONDS)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("command", ["matcher", "tuner"])
async def test_service_waits_not_serving_then_serves_when_database_comes_up(command, dsn, tmp_path) -> None:
    service, listen_var, metrics_var = SERVICES[command]
    db_port, port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    forwarder = Forwarder(db_port, _socket_path(dsn))
    log = tmp_path / f"{command}.log"
    proc = await _spawn(
        command,
        {
            "OPTIMIZER_DSN": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{db_port}/{_database(dsn)}",
            "OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS": "600",
            listen_var: address,
            metrics_var: str(free_port()),
            "OPTIMIZER_SHUTDOWN_GRACE_SECONDS": "1",
        },
        log,
    )
    try:
        await reach(address, {service: NOT_SERVING, "": NOT_SERVING}, _exited(proc, log))
        text = log.read_text()
        assert f"database postgres@127.0.0.1:{db_port}/{_database(dsn)} not reachable yet" in text
        assert "WARNING" in text and "ConnectionRefusedError" in text

        await forwarder.start()  # the database "comes up"
        await reach(address, {service: SERVING, "": SERVING}, _exited(proc, log))
        proc.send_signal(signal.SIGTERM)
        assert await _exit_code(proc) == 0, log.read_text()
        text = log.read_text()
        assert "reachable after" in text
        assert PASSWORD not in text
        # one warning when the wait starts (reminders only every 15 s), never one per attempt
        assert text.count("WARNING") <= 1 + text.count("still waiting for database")
    finally:
        await _kill(proc)
        await forwarder.stop()


async def test_migrate_waits_for_database(pg_server, tmp_path) -> None:
    """`ollama-optimizer migrate` uses the same wait: it applies the schema once the database is there."""
    import asyncpg

    name = f"migrate_wait_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.uri())
    await admin.execute(f"CREATE DATABASE {name}")
    db_port = free_port()
    forwarder = Forwarder(db_port, _socket_path(pg_server.uri()))
    log = tmp_path / "migrate.log"
    proc = await _spawn(
        "migrate",
        {
            "OPTIMIZER_DSN": f"postgresql://postgres@127.0.0.1:{db_port}/{name}",
            "OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS": "600",
        },
        log,
    )
    try:

        async def warned() -> bool:
            return "not reachable yet" in log.read_text()

        await _until(warned, proc, log, "warned that the database is not reachable yet")
        await forwarder.start()
        assert await _exit_code(proc) == 0, log.read_text()
        assert "applied migrations: [1, 2, 3" in log.read_text()
    finally:
        await _kill(proc)
        await forwarder.stop()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.mark.parametrize("case", ["unknown database", "unknown role"])
async def test_database_refusing_us_fails_fast_with_a_clear_message(case, pg_server, tmp_path) -> None:
    """No retry for errors waiting cannot fix (the 600 s wait would outlast the polling bound)."""
    socket_dir = parse_qs(urlsplit(pg_server.uri()).query)["host"][0]
    user, database, expected = {
        "unknown database": ("postgres", "no_such_database", "the database does not exist"),
        "unknown role": ("no_such_role", "postgres", "authentication failed"),
    }[case]
    log = tmp_path / "matcher.log"
    proc = await _spawn(
        "matcher", _waiting_env(f"postgresql://{user}:{PASSWORD}@/{database}?host={socket_dir}", 600), log
    )
    try:
        assert await _exit_code(proc) == 1, log.read_text()
        text = log.read_text()
        assert f"connecting to database {user}@[{socket_dir}]/{database} failed (not retried)" in text
        assert expected in text and "OPTIMIZER_DSN" in text
        assert "not reachable yet" not in text and "Traceback" not in text and PASSWORD not in text
    finally:
        await _kill(proc)


@pytest.mark.parametrize("command", ["matcher", "migrate"])
async def test_unreachable_database_exits_after_the_deadline(command, tmp_path) -> None:
    db_port = free_port()  # nothing listens there
    log = tmp_path / f"{command}.log"
    proc = await _spawn(
        command, _waiting_env(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{db_port}/optimizer", 1), log
    )
    try:
        assert await _exit_code(proc) == 1, log.read_text()
        text = log.read_text()
        assert f"database postgres@127.0.0.1:{db_port}/optimizer not reachable after" in text
        assert "OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS=1" in text and "ConnectionRefusedError" in text
        assert "Traceback" not in text and PASSWORD not in text
    finally:
        await _kill(proc)
