"""`ollama-optimizer up`: one command for a local system.

Checks that every port it needs is free (a second instance fails here, touching nothing), starts
embedded Postgres when no DSN is configured (or attaches to the one already running on the data
directory), applies the expand migrations, runs matcher, tuner and gateway as child processes that
die with it (even on SIGKILL), prints the endpoints once all of them are ready, and stops everything
(children first, then its hold on Postgres) on Ctrl-C or when a child dies.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys

from .config import ClientSettings, DatabaseConfig, GatewaySettings, ListenSettings, ServerConfig, StartupError
from .health_check import EXIT_SERVING, check, client_args_from_env
from .lifeline import die_with_parent
from .migrations import describe
from .server import wait_for_shutdown_signal
from .settings_env import configured, load
from .startup import migrated_database, step
from .upstream_check import say_if_no_ollama

CHILD_GRACE_SECONDS = 10.0
READY_BOUND_SECONDS = 120.0  # children wait for nothing slow: the database already answers
READY_POLL_SECONDS = 0.2


class PortInUse(StartupError):
    """A port `up` needs is taken, typically by another `ollama-optimizer up`."""


async def _spawn(name: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_optimizer.cli", name, env=env, preexec_fn=die_with_parent()
    )


async def _stop(children: dict[str, asyncio.subprocess.Process]) -> None:
    for proc in children.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in children.items():
        try:
            await asyncio.wait_for(proc.wait(), CHILD_GRACE_SECONDS)
        except TimeoutError:
            print(f"{name} did not stop in {CHILD_GRACE_SECONDS}s: killing", file=sys.stderr)
            proc.kill()
            await proc.wait()


def _dialable(listen: str) -> str:
    """A listen address as a client dials it (wildcard hosts become loopback)."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("", "0.0.0.0", "[::]") else listen


def _client_addresses() -> dict[str, str]:
    """Point the gateway at the matcher and tuner this command starts, unless set explicitly."""
    client, listen = load(ClientSettings, os.environ), load(ListenSettings, os.environ)
    return {
        "MATCHER_ADDRESS": client.matcher_address
        if configured(ClientSettings, "matcher_address", os.environ)
        else _dialable(listen.matcher_listen),
        "TUNER_ADDRESS": client.tuner_address
        if configured(ClientSettings, "tuner_address", os.environ)
        else _dialable(listen.tuner_listen),
    }


def _gateway_listen() -> str:
    return load(GatewaySettings, os.environ).listen


def _gateway_metrics_port() -> str:
    return str(load(GatewaySettings, os.environ).metrics_port)


def _with_port(listen: str, port: int | str) -> str:
    return f"{listen.rpartition(':')[0]}:{port}"


def _needed_addresses(with_gateway: bool) -> dict[str, str]:
    """Every address the children will bind, by what binds it."""
    matcher, tuner = ServerConfig.matcher(os.environ), ServerConfig.tuner(os.environ)
    needed = {
        "matcher gRPC": matcher.listen,
        "matcher metrics": _with_port(matcher.listen, matcher.metrics_port),
        "tuner gRPC": tuner.listen,
        "tuner metrics": _with_port(tuner.listen, tuner.metrics_port),
    }
    if with_gateway:
        needed["gateway HTTP"] = _gateway_listen()
        needed["gateway metrics"] = _with_port(_gateway_listen(), _gateway_metrics_port())
    return needed


def _in_use(address: str) -> bool:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise PortInUse(f"cannot bind {address}: {exc}") from exc
    return False


def ensure_ports_free(needed: dict[str, str]) -> None:
    """Raise ``PortInUse`` naming every taken address (before anything is started or attached)."""
    taken = [f"{what} {address}" for what, address in needed.items() if _in_use(address)]
    if taken:
        raise PortInUse(
            f"ports in use: {', '.join(taken)}; is another `ollama-optimizer up` running? "
            "(stop it, or set MATCHER_LISTEN, TUNER_LISTEN, GATEWAY_LISTEN and the *_METRICS_PORT "
            "variables to free ports)"
        )


def _endpoints(with_gateway: bool) -> list[str]:
    matcher, tuner = ServerConfig.matcher(os.environ), ServerConfig.tuner(os.environ)
    lines = [
        f"matcher  gRPC {matcher.listen}   metrics http://127.0.0.1:{matcher.metrics_port}/metrics",
        f"tuner    gRPC {tuner.listen}   metrics http://127.0.0.1:{tuner.metrics_port}/metrics",
    ]
    if with_gateway:
        upstream = load(GatewaySettings, os.environ).upstream
        lines.append(
            f"gateway  HTTP http://{_gateway_listen()} -> {upstream}   "
            f"metrics http://127.0.0.1:{_gateway_metrics_port()}/metrics"
        )
    return lines


async def _grpc_ready(address: str, service: str) -> bool:
    code, _message = await check(address, service, READY_POLL_SECONDS * 5, **client_args_from_env())
    return code == EXIT_SERVING


async def _http_ready(address: str) -> bool:
    host, _, port = _dialable(address).rpartition(":")
    try:
        _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except OSError:
        return False
    writer.close()
    return True


async def _ready(name: str) -> bool:
    from .gen.optimizer.v1 import matcher_pb2, tuner_pb2

    if name == "matcher":
        service = matcher_pb2.DESCRIPTOR.services_by_name["Matcher"].full_name
        return await _grpc_ready(_dialable(ServerConfig.matcher(os.environ).listen), service)
    if name == "tuner":
        service = tuner_pb2.DESCRIPTOR.services_by_name["Tuner"].full_name
        return await _grpc_ready(_dialable(ServerConfig.tuner(os.environ).listen), service)
    return await _http_ready(_gateway_listen())


async def _wait_ready(children: dict[str, asyncio.subprocess.Process]) -> str | None:
    """None once every child is ready; else why not (a child exited, or it never got ready)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_BOUND_SECONDS
    pending = set(children)
    while pending:
        for name in sorted(pending):
            code = children[name].returncode
            if code is not None:
                return f"{name} exited with code {code} while starting"
            if await _ready(name):
                pending.discard(name)
        if pending and loop.time() > deadline:
            return f"{', '.join(sorted(pending))} not ready after {READY_BOUND_SECONDS:g}s"
        if pending:
            await asyncio.sleep(READY_POLL_SECONDS)
    return None


async def run_all(with_gateway: bool = True) -> int:
    """Run the whole system until SIGINT/SIGTERM or a child's exit; returns an exit code."""
    ensure_ports_free(_needed_addresses(with_gateway))
    async with migrated_database(load(DatabaseConfig, os.environ)) as (dsn, embedded, report):
        if report.contract_pending:
            print(describe(report), file=sys.stderr)
        env = {**os.environ, "OPTIMIZER_DSN": dsn, **_client_addresses()}
        names = ["matcher", "tuner"] + (["gateway"] if with_gateway else [])
        # Ctrl-C is handled from before the banner: a user may press it as soon as they read it.
        signal_wait = asyncio.ensure_future(wait_for_shutdown_signal())
        with step(f"starting {', '.join(names)}") as starting:
            children = {name: await _spawn(name, env) for name in names}
            not_ready = await _wait_ready(children)
            if not_ready is not None:
                starting.failed()
        if not_ready is not None:
            print(f"ollama-optimizer did not start: {not_ready}; stopping", file=sys.stderr)
            signal_wait.cancel()
            await _stop(children)
            return 1
        print("ollama-optimizer is up (Ctrl-C stops everything):")
        if embedded is not None:
            print(f"postgres embedded, data in {embedded.data_dir}")
        for line in _endpoints(with_gateway):
            print("  " + line)
        sys.stdout.flush()
        notice = asyncio.ensure_future(
            say_if_no_ollama(load(GatewaySettings, os.environ).upstream) if with_gateway else asyncio.sleep(0)
        )
        child_waits = {asyncio.ensure_future(p.wait()): n for n, p in children.items()}
        done, _ = await asyncio.wait({signal_wait, *child_waits}, return_when=asyncio.FIRST_COMPLETED)
        notice.cancel()
        exit_code = 0
        for task, name in child_waits.items():
            if task in done:
                print(f"{name} exited with code {task.result()}: stopping", file=sys.stderr)
                exit_code = 1
        signal_wait.cancel()
        await _stop(children)
        for task in child_waits:
            task.cancel()
    return exit_code
