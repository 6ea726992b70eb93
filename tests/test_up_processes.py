"""`ollama-optimizer up` as a user runs it: real processes, embedded Postgres, real ports.

- a second `up` and `migrate` on the same data directory leave the first instance's Postgres running;
- the second `up` fails before printing "is up", naming the ports in use;
- `kill -9` of `up` takes matcher, tuner, gateway and Postgres with it, and frees every port;
- a service does not migrate: it waits, NOT_SERVING, until `migrate` has run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from grpc_health.v1 import health_pb2

from bench.ports import free_port

from health_fixtures import reach

SERVING = health_pb2.HealthCheckResponse.SERVING
POLL_BOUND_SECONDS = 120.0  # bounds polling on a busy shared host; never a timing assertion
ADDRESS_VARIABLES = ("MATCHER_LISTEN", "TUNER_LISTEN", "GATEWAY_LISTEN")
PORT_VARIABLES = ("MATCHER_METRICS_PORT", "TUNER_METRICS_PORT", "GATEWAY_METRICS_PORT")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPTIMIZER_DSN", "OLLAMA_HOST")}
    env.update({name: f"127.0.0.1:{free_port()}" for name in ADDRESS_VARIABLES})
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    env.update(
        OPTIMIZER_DATA_DIR=str(tmp_path / "pg"),
        OLLAMA_HOST=f"127.0.0.1:{free_port()}",
        OPTIMIZER_SHUTDOWN_GRACE_SECONDS="1",
        OPTIMIZER_EMBEDDED_SHARED_BUFFERS_MB="128",
    )
    return env


def _ports(env: dict[str, str]) -> list[int]:
    return [int(env[n].rpartition(":")[2]) for n in ADDRESS_VARIABLES] + [int(env[n]) for n in PORT_VARIABLES]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _exec(command: str, env: dict[str, str], stdout: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_optimizer.cli", command, env=env, stdout=stdout, stderr=asyncio.subprocess.STDOUT
    )


async def _cli(command: str, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await _exec(command, env, out)


async def _poll(condition: Callable[[], Awaitable[bool] | bool], what: str, log: Path | None = None) -> None:
    """Poll a state no event announces (a process exiting that is not our child), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_BOUND_SECONDS
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        assert loop.time() < deadline, f"never {what} in {POLL_BOUND_SECONDS:.0f} s" + (
            f":\n{log.read_text()}" if log else ""
        )
        await asyncio.sleep(0.1)


async def _start_up(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`up`, once it printed its banner: its output is read as it comes (and copied to ``log``)."""
    proc = await _exec("up", env, asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    banner = asyncio.get_running_loop().create_future()

    async def copy(stream: asyncio.StreamReader) -> None:
        with log.open("ab") as out:
            while line := await stream.readline():
                out.write(line)
                out.flush()
                if b"is up" in line and not banner.done():
                    banner.set_result(None)
        if not banner.done():
            banner.set_exception(AssertionError(f"up exited with {await proc.wait()}:\n{log.read_text()}"))

    proc.copier = asyncio.ensure_future(copy(proc.stdout))  # type: ignore[attr-defined]
    try:
        await asyncio.wait_for(asyncio.shield(banner), POLL_BOUND_SECONDS)
    except TimeoutError:
        raise AssertionError(f"up printed no 'is up' in {POLL_BOUND_SECONDS:.0f} s:\n{log.read_text()}") from None
    return proc


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: the init of a container may never reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def _reapers(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "ollama_optimizer.embedded_pg" in cmdline and str(data_dir.resolve()) in cmdline and not _gone(proc.pid):
            found.append(proc)
    return found


async def _answers(data_dir: Path) -> bool:
    conn = await asyncpg.connect(f"postgresql://postgres:@/postgres?host={data_dir.resolve()}", timeout=10)
    try:
        return await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), POLL_BOUND_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_second_up_and_migrate_leave_the_first_instance_running(tmp_path: Path) -> None:
    env = _env(tmp_path)
    data_dir = tmp_path / "pg"
    first = await _start_up(env, tmp_path / "first.log")
    try:
        postmaster = _postmaster(data_dir)
        assert len(_reapers(data_dir)) == 1

        migrate = await _cli("migrate", env, tmp_path / "migrate.log")
        assert await asyncio.wait_for(migrate.wait(), POLL_BOUND_SECONDS) == 0, (tmp_path / "migrate.log").read_text()
        assert "applied migrations: none" in (tmp_path / "migrate.log").read_text()
        await _poll(lambda: len(_reapers(data_dir)) == 1, "migrate's reaper done")
        assert not _gone(postmaster) and await _answers(data_dir)

        second = await _cli("up", env, tmp_path / "second.log")
        assert await asyncio.wait_for(second.wait(), POLL_BOUND_SECONDS) == 1
        output = (tmp_path / "second.log").read_text()
        assert "ports in use" in output and "is up" not in output and "Traceback" not in output

        await _poll(lambda: len(_reapers(data_dir)) == 1, "only the first instance's reaper left")
        assert not _gone(postmaster) and _postmaster(data_dir) == postmaster
        assert await _answers(data_dir)
        await reach(env["MATCHER_LISTEN"], {"": SERVING})
        assert first.returncode is None
    finally:
        await _stop(first)
    assert await first.wait() == 0
    await _poll(lambda: _gone(postmaster), "Postgres stopped after the last owner")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children die with their parent on Linux")
async def test_kill_9_of_up_takes_every_child_and_postgres_with_it(tmp_path: Path) -> None:
    env = _env(tmp_path)
    data_dir = tmp_path / "pg"
    up = await _start_up(env, tmp_path / "up.log")
    try:
        services = [
            c for c in psutil.Process(up.pid).children() if not _gone(c.pid) and "ollama_optimizer.cli" in c.cmdline()
        ]
        names = {c.pid: c.cmdline()[-1] for c in services}
        assert sorted(names.values()) == ["gateway", "matcher", "tuner"]
        postmaster = _postmaster(data_dir)
    finally:
        up.kill()
        await up.wait()
    for pid, name in names.items():
        await _poll(lambda pid=pid: _gone(pid), f"{name} exited after its parent")
    await _poll(lambda: _gone(postmaster), "Postgres stopped by the reaper")
    assert [port for port in _ports(env) if not _port_free(port)] == []


async def test_a_service_waits_for_migrate_instead_of_migrating(pg_server, tmp_path: Path) -> None:
    admin = await asyncpg.connect(pg_server.uri())
    await admin.execute("CREATE DATABASE unmigrated")
    env = {
        **os.environ,
        "OPTIMIZER_DSN": pg_server.uri("unmigrated"),
        "MATCHER_LISTEN": f"127.0.0.1:{free_port()}",
        "MATCHER_METRICS_PORT": str(free_port()),
        "OPTIMIZER_SHUTDOWN_GRACE_SECONDS": "1",
    }
    env.pop("OPTIMIZER_MIGRATE_ON_START", None)
    log = tmp_path / "matcher.log"
    matcher = await _cli("matcher", env, log)
    try:
        address = env["MATCHER_LISTEN"]
        await _poll(lambda: "lacks schema migrations" in log.read_text(), "said what it waits for", log)
        await reach(address, {"": health_pb2.HealthCheckResponse.NOT_SERVING})
        conn = await asyncpg.connect(pg_server.uri("unmigrated"))
        try:
            assert await conn.fetchval("SELECT to_regclass('matcher_template')") is None  # it did not migrate
        finally:
            await conn.close()
        migrate = await _cli("migrate", env, tmp_path / "migrate.log")
        assert await asyncio.wait_for(migrate.wait(), POLL_BOUND_SECONDS) == 0
        await reach(address, {"": SERVING})
    finally:
        await _stop(matcher)
        await admin.execute("DROP DATABASE unmigrated WITH (FORCE)")
        await admin.close()
