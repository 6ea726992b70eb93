"""`ollama-optimizer up`: one command for a local system.

Starts embedded Postgres when no DSN is configured, applies migrations, runs
matcher, tuner and gateway as child processes, prints the endpoints and stops
everything (children first, then Postgres) on Ctrl-C or when a child dies.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys

from .config import DatabaseConfig, ServerConfig, env_str
from .db import embedded_or_configured_dsn
from .embedded_pg import EmbeddedPostgres
from .migrations import apply_migrations
from .readiness import LISTEN_TIMEOUT_SECONDS, no_ollama_notice, ollama_answers, wait_until_listening
from .server import wait_for_shutdown_signal

CHILD_GRACE_SECONDS = 10.0


async def _spawn(name: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_optimizer.cli", name, env=env
    )


async def _stop(children: dict[str, asyncio.subprocess.Process]) -> None:
    for proc in children.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in children.items():
        try:
            await asyncio.wait_for(proc.wait(), CHILD_GRACE_SECONDS)
        except asyncio.TimeoutError:
            print(f"{name} did not stop in {CHILD_GRACE_SECONDS}s: killing", file=sys.stderr)
            proc.kill()
            await proc.wait()


def _dialable(listen: str) -> str:
    """A listen address as a client dials it (wildcard hosts become loopback)."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("", "0.0.0.0", "[::]") else listen


def _client_addresses() -> dict[str, str]:
    """Point the gateway at the matcher and tuner this command starts, unless set explicitly."""
    return {
        "MATCHER_ADDRESS": os.environ.get("MATCHER_ADDRESS") or _dialable(ServerConfig.matcher().listen),
        "TUNER_ADDRESS": os.environ.get("TUNER_ADDRESS") or _dialable(ServerConfig.tuner().listen),
    }


def _endpoints(with_gateway: bool) -> list[str]:
    matcher, tuner = ServerConfig.matcher(), ServerConfig.tuner()
    lines = [
        f"matcher  gRPC {matcher.listen}   metrics http://127.0.0.1:{matcher.metrics_port}/metrics",
        f"tuner    gRPC {tuner.listen}   metrics http://127.0.0.1:{tuner.metrics_port}/metrics",
    ]
    if with_gateway:
        listen = env_str("GATEWAY_LISTEN", "127.0.0.1:11435")
        upstream = env_str("OLLAMA_HOST", "127.0.0.1:11434")
        metrics = env_str("GATEWAY_METRICS_PORT", "9463")
        lines.append(
            f"gateway  HTTP http://{listen} -> {upstream}   metrics http://127.0.0.1:{metrics}/metrics"
        )
    return lines


def _listen_addresses(with_gateway: bool) -> dict[str, str]:
    addresses = {"matcher": _dialable(ServerConfig.matcher().listen), "tuner": _dialable(ServerConfig.tuner().listen)}
    if with_gateway:
        addresses["gateway"] = _dialable(env_str("GATEWAY_LISTEN", "127.0.0.1:11435"))
    return addresses


async def _announce_when_listening(children: dict[str, asyncio.subprocess.Process], with_gateway: bool,
                                   embedded: EmbeddedPostgres | None) -> None:
    """The "is up" banner once every service accepts connections (nothing if one exited meanwhile);
    a notice when no Ollama answers at the gateway's upstream."""
    not_listening = await wait_until_listening(_listen_addresses(with_gateway), children)
    if any(proc.returncode is not None for proc in children.values()):
        return
    if not_listening:
        print(f"still not listening after {LISTEN_TIMEOUT_SECONDS:.0f} s: {', '.join(not_listening)}",
              file=sys.stderr)
    print("ollama-optimizer is up (Ctrl-C stops everything):")
    if embedded is not None:
        print(f"postgres embedded, data in {embedded.data_dir}")
    for line in _endpoints(with_gateway):
        print("  " + line)
    sys.stdout.flush()
    if with_gateway:
        from proxy_plugin.gateway import normalise_upstream

        upstream = normalise_upstream(env_str("OLLAMA_HOST", "127.0.0.1:11434"))
        if not await ollama_answers(upstream):
            print(no_ollama_notice(upstream), file=sys.stderr, flush=True)


async def run_all(with_gateway: bool = True) -> int:
    """Run the whole system until SIGINT/SIGTERM or a child's exit; returns an exit code."""
    async with embedded_or_configured_dsn(DatabaseConfig()) as (dsn, embedded):
        await apply_migrations(dsn)
        env = {**os.environ, "OPTIMIZER_DSN": dsn, **_client_addresses()}
        names = ["matcher", "tuner"] + (["gateway"] if with_gateway else [])
        signal_wait = asyncio.ensure_future(wait_for_shutdown_signal())
        children = {name: await _spawn(name, env) for name in names}
        announce = asyncio.ensure_future(_announce_when_listening(children, with_gateway, embedded))
        child_waits = {asyncio.ensure_future(p.wait()): n for n, p in children.items()}
        done, _ = await asyncio.wait({signal_wait, *child_waits}, return_when=asyncio.FIRST_COMPLETED)
        announce.cancel()
        exit_code = 0
        for task in done:
            if task in child_waits:
                print(f"{child_waits[task]} exited with code {task.result()}: stopping", file=sys.stderr)
                exit_code = 1
        signal_wait.cancel()
        await _stop(children)
        for task in child_waits:
            task.cancel()
    return exit_code
