"""Fault injection with real processes: `python -m bench.faults` (last line: one JSON object).

Postgres (a standalone postmaster), `ollama-optimizer matcher`, `tuner` and `gateway`, and the Ollama
emulator run as separate processes; closed-loop chat clients stream through the gateway. Each fault in
turn: kill -9 (matcher, tuner, Postgres, all three), SIGSTOP (hang) of each, and a slow stand-in (a relay
that delays every answer); with a standby tuner running: the writer's lock session terminated
(`pg_terminate_backend`), the writer SIGSTOPped past its lock loss while the standby takes over, and
Summary calls hammered during Report load. Tuner calls pass a router (bench/tuner_router.py) that
follows the writer and records each outcome id with its fate. Figures: failed user requests,
request-path overhead (the gateway's optimizer_plugin_overhead_seconds) during the outage and once the
breaker is open, recovery without restarting the gateway, and outcome ids: acknowledged as stored vs
stored (``lost_ids``, ``duplicate_ids``), rows committed by a tuner while another session surely held
the writer lock (``stale_writer_rows``, from commit timestamps and a polled lock-holder timeline), the
time from the writer's death or lock loss (kill -9 of the writer, its lock session terminated, SIGSTOP
past its lock loss) to the next stored row (``failover_s``), the same from a SIGSTOPped writer whose
lock session Postgres ends for its silence (``hung_writer_failover_s``), plus outcomes dropped and
counted at the plugin while the tuner was unreachable. Each fault ends once the gateway has recovered and
the tuner has stored what it buffered (`buffer_written_s`). The services log
at WARNING; `FAULTS_LOG_LEVEL=INFO` shows more (logs under /tmp/faults-*/logs).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.ports import free_port
from bench.processes import (
    Postgres,
    Process,
    Service,
    emulator_process,
    gateway_process,
    relaying,
    service_env,
    start_postgres,
    wait_for,
)
from bench.tuner_router import TunerRouter
from bench.workload import words
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Relay:
    """A TCP relay with an adjustable delay on the answer direction: a slow stand-in without a restart.
    ``stop`` closes its connections and waits for their handlers: none is left to be cancelled at shutdown
    (asyncio logs a cancelled connection handler as an error, with a traceback)."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.delay_s, self.port = target_port, 0.0, 0
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = False

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        finally:
            self._writers.discard(writer)
        if self._stopping:
            writer.close()
            up_writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True))
        finally:
            self._writers.difference_update((writer, up_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: bool) -> None:
        try:
            while data := await reader.read(65536):
                if answers and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a peer went away, or shutdown
        finally:
            writer.close()

    async def stop(self) -> None:
        """Stop accepting, close every connection and wait until their handlers have ended."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(set(self._handlers))


async def scrape(port: int) -> Samples:
    """Every sample of a /metrics endpoint (empty when unreachable)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            text = await response.text()
    except (TimeoutError, aiohttp.ClientError):
        return {}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def histogram_delta(before: Samples, after: Samples, name: str) -> tuple[int, float, float]:
    """(count, mean seconds, p99 upper bucket bound seconds) of a histogram between two scrapes."""
    buckets = sorted(
        (float(dict(labels)["le"]), after[(n, labels)] - before.get((n, labels), 0.0))
        for (n, labels) in after
        if n == f"{name}_bucket"
    )
    count = int(value(after, f"{name}_count") - value(before, f"{name}_count"))
    total = value(after, f"{name}_sum") - value(before, f"{name}_sum")
    p99 = 0.0
    for bound, cumulative in buckets:
        if count and cumulative >= 0.99 * count:
            p99 = bound
            break
    return count, (total / count if count else 0.0), p99


# ---- the fault scenario -------------------------------------------------------------------------
MODEL = "llama3.2:3b"
_rng = random.Random(11)
TEMPLATES = [(words(_rng, 150), words(_rng, 250)) for _ in range(3)]


@dataclass
class Traffic:
    """Closed-loop chat clients through the gateway; every request's start time, success and latency."""

    url: str
    clients: int
    records: list[tuple[float, bool, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))

    def stop(self) -> None:
        self._stop.set()

    async def _client(self, session: aiohttp.ClientSession, seed: int) -> None:
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            system, instructions = rng.choice(TEMPLATES)
            stream = rng.random() < 0.5
            body = {
                "model": MODEL,
                "stream": stream,
                "options": {"num_predict": 16},
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": instructions + "\n" + words(rng, 20)},
                ],
            }
            started = loop.time()
            ok = False
            try:
                async with session.post(self.url + "/api/chat", json=body) as response:
                    raw = await response.read()
                lines = [line for line in raw.split(b"\n") if line.strip()]
                ok = response.status == 200 and bool(lines) and json.loads(lines[-1]).get("done") is True
                if not ok:
                    self.errors.append(f"HTTP {response.status}: {raw[:200]!r}")
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                self.errors.append(repr(exc))
            self.records.append((started, ok, loop.time() - started))

    def window(self, start: float, end: float) -> tuple[int, int]:
        """(requests, failed) started in [start, end)."""
        inside = [ok for t, ok, _ in self.records if start <= t < end]
        return len(inside), inside.count(False)


@dataclass
class System:
    """Postgres, matcher, tuner (each behind a relay), emulator and gateway as real processes."""

    root: Path
    postgres: Postgres
    matcher: Service
    tuners: dict[str, Service]
    emulator: Process
    gateway: Process
    matcher_relay: Relay
    router_proc: Process
    router_port: int
    gateway_port: int
    gateway_metrics: int
    holders: list[tuple[float, str]] = field(default_factory=list)  # (Postgres clock, lock holder or "")
    faulted: dict[str, Process] = field(default_factory=dict)  # the processes the current fault hit, by target

    @property
    def records(self) -> Path:
        return self.root / "router.jsonl"

    @property
    def router(self) -> TunerRouter:
        """What the router recorded so far: ids and fates, and the tuner it sends to (the writer)."""
        return TunerRouter.replay(self.records)

    @property
    def router_address(self) -> str:
        return f"127.0.0.1:{self.router_port}"

    @property
    def tuner(self) -> Service:
        """The tuner the router sends to: the writer, as last seen."""
        return self.tuners[self.records.with_suffix(".writer").read_text()]

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    async def gw(self) -> Samples:
        return await scrape(self.gateway_metrics)

    def stop(self) -> None:
        for proc in (self.gateway, self.router_proc, self.emulator, *self.tuners.values(), self.matcher, self.postgres):
            proc.terminate()


async def start_system(root: Path, time_scale: float, cooldown_s: float, delay_s: float) -> System:
    postgres = await start_postgres(root)
    logs = postgres.log_path.parent
    env = service_env(postgres.dsn, os.environ.get("FAULTS_LOG_LEVEL", "WARNING"))
    matcher = Service("matcher", env, logs)
    tuners = {name: Service("tuner", env, logs, name) for name in ("tuner-a", "tuner-b")}
    for service in (matcher, *tuners.values()):
        service.start()
        await wait_for(service.ready, 60, f"{service.name} serving")  # in turn: tuner-a becomes the writer

    matcher_relay = await Relay(matcher.grpc_port).start()
    port_file = root / "router.port"
    router = Process(
        "router",
        [
            sys.executable,
            "-m",
            "bench.tuner_router",
            "--records",
            str(root / "router.jsonl"),
            "--port-file",
            str(port_file),
            "--delay",
            str(delay_s),
            *(f"--tuner={n}={t.grpc_port}:{t.metrics_port}" for n, t in tuners.items()),
        ],
        env,
        logs,
    )
    router.start()

    async def router_up() -> bool:
        return port_file.exists() and bool(port_file.read_text())

    await wait_for(router_up, 60, "tuner router listening")
    router_port = int(port_file.read_text())
    emu_port, gw_port, gw_metrics = free_port(), free_port(), free_port()
    emulator = emulator_process(logs, emu_port, time_scale)
    emulator.start()
    gateway = gateway_process(
        logs,
        gw_port,
        emu_port,
        gw_metrics,
        env,
        MATCHER_ADDRESS=matcher_relay.address,
        TUNER_ADDRESS=f"127.0.0.1:{router_port}",
        OPT_BREAKER_COOLDOWN_S=str(cooldown_s),
        OPT_LEARNING_BREAKER_COOLDOWN_S=str(cooldown_s),
    )
    gateway.start()
    system = System(
        root, postgres, matcher, tuners, emulator, gateway, matcher_relay, router, router_port, gw_port, gw_metrics
    )
    await wait_for(lambda: relaying(system.gateway_url), 60, "gateway relaying")
    return system


@dataclass(frozen=True)
class Fault:
    name: str
    targets: tuple[str, ...]  # postgres | matcher | tuner (the writer)
    kind: str  # kill9 | stop | slow | terminate_lock | stop_failover | summary
    # "failover": the writer dies or loses its lock (failover_s); "hung": the writer stops answering and
    # keeps its lock session open until Postgres ends it (hung_writer_failover_s); "": neither
    measure: str = ""


FAULTS = (
    Fault("kill9_matcher", ("matcher",), "kill9"),
    Fault("kill9_tuner", ("tuner",), "kill9", "failover"),
    Fault("kill9_postgres", ("postgres",), "kill9"),
    Fault("kill9_all", ("postgres", "matcher", "tuner"), "kill9"),
    Fault("sigstop_matcher", ("matcher",), "stop"),
    Fault("sigstop_tuner", ("tuner",), "stop", "hung"),
    Fault("sigstop_postgres", ("postgres",), "stop"),
    Fault("slow_matcher_and_tuner", ("matcher", "tuner"), "slow"),
    Fault("terminate_lock_session", ("tuner",), "terminate_lock", "failover"),
    Fault("sigstop_writer_failover", ("tuner",), "stop_failover", "failover"),
    Fault("summary_hammer", ("tuner",), "summary"),
)
LOCK_LOSS = ("terminate_lock", "stop_failover")
HOLDER_SQL = """SELECT clock_timestamp() AS at, max(a.client_port) AS client_port, max(l.pid) AS pid
                FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                WHERE l.locktype = 'advisory' AND l.granted AND l.objid = 1970169202 AND l.classid = 116"""


def _proc(system: System, name: str) -> Process:
    return {"postgres": system.postgres, "matcher": system.matcher, "tuner": system.tuner}[name]


async def inject(system: System, fault: Fault, delay_s: float) -> float | None:
    """Inject the fault; for a measured one, the Postgres time the writer died, stopped, or lost its lock
    session (read before a kill or stop: the failover measured from it is never shorter than the real one)."""
    system.faulted = {name: _proc(system, name) for name in fault.targets}
    died_at = await postgres_now(system.postgres.dsn) if fault.measure and fault.kind not in LOCK_LOSS else None
    for name, proc in system.faulted.items():
        if fault.kind == "kill9":
            proc.kill9()
        elif fault.kind in ("stop", "stop_failover"):
            proc.signal_group(signal.SIGSTOP)
        elif fault.kind == "slow" and name == "matcher":
            system.matcher_relay.delay_s = delay_s
        elif fault.kind == "slow":
            system.router_proc.signal_group(signal.SIGUSR1)
    if fault.kind in LOCK_LOSS:
        return await terminate_lock_session(system.postgres.dsn)
    return died_at


async def postgres_now(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
    finally:
        await conn.close()


async def terminate_lock_session(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(HOLDER_SQL)
        await conn.execute("SELECT pg_terminate_backend($1)", row["pid"])
        return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
    finally:
        await conn.close()


async def hammer_summary(system: System, stop: asyncio.Event) -> tuple[int, int]:
    """Summary calls back to back through the router (to the writer) until ``stop``: (calls, failed)."""
    calls = failed = 0
    async with grpc.aio.insecure_channel(system.router_address) as channel:
        stub = tuner_pb2_grpc.TunerStub(channel)
        while not stop.is_set():
            calls += 1
            try:
                await stub.Summary(tuner_pb2.SummaryRequest(period_seconds=600), timeout=5)
            except grpc.aio.AioRpcError:
                failed += 1
    return calls, failed


def _owner(system: System, client_port: int | None) -> str:
    """The tuner whose process has the TCP connection from ``client_port`` ("" for none)."""
    for name, tuner in system.tuners.items():
        try:
            if any(
                c.laddr and c.laddr.port == client_port for c in psutil.Process(tuner.pid).net_connections(kind="tcp")
            ):
                return name
        except (psutil.Error, AssertionError):
            continue
    return ""


async def poll_holders(system: System, stop: asyncio.Event) -> None:
    """Who holds the writer lock, every 0.1 s, on the Postgres clock (commit timestamps use the same)."""
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        try:
            conn = (
                conn
                if conn is not None and not conn.is_closed()
                else await asyncpg.connect(system.postgres.dsn, timeout=1)
            )
            row = await conn.fetchrow(HOLDER_SQL.replace("clock_timestamp()", "extract(epoch FROM clock_timestamp())"))
            system.holders.append((float(row["at"]), _owner(system, row["client_port"])))
        except Exception:  # noqa: BLE001 - Postgres killed or stopped mid-query: any client error; reconnect
            if conn is not None:
                conn.terminate()
            conn = None
        await asyncio.sleep(0.1)
    if conn is not None:
        await conn.close()


async def recover(system: System, fault: Fault) -> None:
    """Undo the fault (restart / SIGCONT / no delay) and wait until the processes serve again."""
    for name, proc in system.faulted.items():  # in order, each serving before the next: services need Postgres
        if fault.kind == "kill9":
            proc.start()
        elif fault.kind in ("stop", "stop_failover"):
            proc.signal_group(signal.SIGCONT)
        elif fault.kind == "slow" and name == "matcher":
            system.matcher_relay.delay_s = 0.0
        elif fault.kind == "slow":
            system.router_proc.signal_group(signal.SIGUSR2)
        await wait_for(proc.ready, 60, f"{name} back")  # type: ignore[attr-defined]


def _by_label(before: Samples, after: Samples, name: str, label: str) -> dict[str, int]:
    """Non-zero increases of a counter, by one label."""
    out: dict[str, int] = {}
    for (n, labels), v in after.items():
        if n == name:
            key = "/".join(v2 for k2, v2 in sorted(labels) if k2 in label.split(","))
            delta = int(v - before.get((n, labels), 0.0))
            if delta:
                out[key] = out.get(key, 0) + delta
    return out


def _breakers_closed(samples: Samples) -> bool:
    return all(value(samples, "optimizer_plugin_breaker_state", service=s) == 0 for s in ("matcher", "tuner"))


async def run_fault(system: System, traffic: Traffic, fault: Fault, seconds: float, delay_s: float) -> dict:
    """Inject, hold for ``seconds`` (noting when a breaker opens), recover, wait for the gateway to recover."""
    loop = asyncio.get_running_loop()
    before = await system.gw()
    t0 = loop.time()
    hammer_stop = asyncio.Event()
    hammer = asyncio.create_task(hammer_summary(system, hammer_stop)) if fault.kind == "summary" else None
    old_writer = system.records.with_suffix(".writer").read_text()
    lost_at = await inject(system, fault, delay_s)
    # A killed or stopped writer's own commit in flight may land just after; a terminated one may win back.
    replaced = old_writer if fault.kind != "terminate_lock" else ""
    opened_at: float | None = None
    at_open: Samples = {}
    while loop.time() - t0 < seconds:
        samples = await system.gw()
        if opened_at is None and not _breakers_closed(samples):
            opened_at, at_open = loop.time(), samples
        await asyncio.sleep(0.2)
    outage_end = await system.gw()
    t1 = loop.time()
    hammer_stop.set()
    summary_calls, summary_failed = await hammer if hammer is not None else (0, 0)
    await recover(system, fault)
    t_back = loop.time()
    sent0 = value(outage_end, "optimizer_plugin_decisions_total", action="apply")

    async def gateway_recovered() -> bool:
        s = await system.gw()
        return _breakers_closed(s) and value(s, "optimizer_plugin_decisions_total", action="apply") > sent0

    recovery_s = await wait_for(gateway_recovered, 90, f"gateway recovered from {fault.name}", 0.1)
    buffer_s = await _buffer_written(system, fault)
    after = await system.gw()
    n, mean, p99 = histogram_delta(before, outage_end, "optimizer_plugin_overhead_seconds")
    open_n, open_mean, open_p99 = (
        histogram_delta(at_open, outage_end, "optimizer_plugin_overhead_seconds") if opened_at else (0, 0.0, 0.0)
    )
    requests, failed = traffic.window(t0, loop.time())
    return {
        "fault": fault.name,
        "requests": requests,
        "failed_requests": failed,
        "failover_s": await _failover_s(system, lost_at, replaced) if fault.measure == "failover" else None,
        "hung_writer_failover_s": await _failover_s(system, lost_at, replaced) if fault.measure == "hung" else None,
        "summary_calls": summary_calls,
        "summary_failed": summary_failed,
        "outage_s": round(t1 - t0, 1),
        "breaker_opened_after_s": round(opened_at - t0, 2) if opened_at else None,
        "overhead_ms_mean_during_outage": round(mean * 1e3, 2),
        "overhead_ms_p99_during_outage": p99 * 1e3,
        "overhead_ms_mean_breaker_open": round(open_mean * 1e3, 3),
        "overhead_ms_p99_breaker_open": open_p99 * 1e3,
        "overhead_samples": n,
        "breaker_open_samples": open_n,
        "recovery_s_after_restart": round(recovery_s, 2),
        "buffer_written_s": round(buffer_s, 2),
        "restore_s": round(t_back - t1, 2),
        "outcomes_acknowledged": _acked(after) - _acked(before),
        "outcomes_dropped_and_counted": _dropped(after) - _dropped(before),
        "passthrough_reasons": _by_label(before, after, "optimizer_plugin_passthrough_total", "reason"),
        "rpc_errors": _by_label(before, after, "optimizer_plugin_rpc_errors_total", "service,method,code"),
    }


async def _failover_s(system: System, lost_at: float, replaced: str) -> float | None:
    """Seconds from the writer's death or lock loss to the first outcome row committed after it (Postgres
    clock) that the router sent to another tuner than ``replaced`` and saw answered: a row the next
    writer stored (an id whose answer never came back may be the dead writer's last commit)."""
    conn = await asyncpg.connect(system.postgres.dsn)
    try:
        rows = await conn.fetch(
            """SELECT outcome_id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) AS committed
               FROM tuner_outcome WHERE pg_xact_commit_timestamp(xmin) > to_timestamp($1)
               ORDER BY 2""",
            lost_at,
        )
    finally:
        await conn.close()
    sent_to = system.router.sent_to
    first = next(
        (r["committed"] for r in rows if not replaced or sent_to.get(r["outcome_id"], replaced) != replaced), None
    )
    return round(float(first) - lost_at, 2) if first is not None else None


async def _buffer_written(system: System, fault: Fault) -> float:
    """Seconds until the tuner is the writer again and has stored every outcome it buffered so far
    (what it acknowledged while Postgres was away). The next fault waits for this: a second crash
    before the buffer is written would lose it, which is the fault's cost, not the next one's."""

    async def targets() -> dict[str, float]:
        out = {}
        for name, tuner in system.tuners.items():
            s = await scrape(tuner.metrics_port)
            out[name] = value(s, "optimizer_tuner_outcomes_written_total") + value(s, "optimizer_tuner_outcome_buffer")
        return out

    first = await targets()

    async def written() -> bool:  # whichever tuner is the writer now (a standby may have taken over)
        s = await scrape(system.tuner.metrics_port)
        writer = system.records.with_suffix(".writer").read_text()
        return (
            bool(s)
            and value(s, "optimizer_tuner_writer") == 1
            and value(s, "optimizer_tuner_outcomes_written_total") >= first.get(writer, 0)
        )

    return await wait_for(written, 90, f"tuner buffer written after {fault.name}", 0.1)


def _acked(samples: Samples) -> int:
    return int(value(samples, "optimizer_plugin_telemetry_sent_total", kind="report"))


def _completed(samples: Samples) -> int:
    return int(value(samples, "optimizer_gateway_requests_total", endpoint="chat", code="200"))


def _dropped(samples: Samples) -> int:
    return _completed(samples) - _acked(samples) - int(value(samples, "optimizer_plugin_telemetry_queue_depth"))


async def settle(system: System, timeout_s: float = 60) -> Samples:
    """Wait until the gateway's telemetry queue and the tuner's write buffer are empty."""

    async def quiet() -> bool:
        gw, tuner = await system.gw(), await scrape(system.tuner.metrics_port)
        return (
            bool(gw)
            and value(gw, "optimizer_plugin_telemetry_queue_depth") == 0
            and bool(tuner)
            and value(tuner, "optimizer_tuner_outcome_buffer") == 0
        )

    await wait_for(quiet, timeout_s, "telemetry settled", 0.2)
    return await system.gw()


def stale_rows(rows: list[tuple[str, float]], sent_to: dict[str, str], holders: list[tuple[float, str]]) -> int:
    """Rows committed while the lock was surely held by another session than the writing tuner's: the
    polls just before and just after the commit both saw the same holder, and it was not that tuner."""
    stale = 0
    times = [at for at, _ in holders]
    for outcome_id, committed in rows:
        i = bisect.bisect_right(times, committed)
        if 0 < i < len(holders) and holders[i - 1][1] == holders[i][1] != sent_to.get(outcome_id, holders[i][1]):
            stale += 1
    return stale


async def id_figures(system: System) -> dict[str, int]:
    """Outcome ids acknowledged as stored vs stored, duplicates, and rows written without the lock."""
    conn = await asyncpg.connect(system.postgres.dsn)
    try:
        rows = [
            (r["outcome_id"], float(r["committed"]))
            for r in await conn.fetch(
                """SELECT outcome_id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) AS committed
               FROM tuner_outcome"""
            )
        ]
    finally:
        await conn.close()
    stored = {outcome_id for outcome_id, _ in rows}
    router = system.router
    return {
        "acknowledged_ids": len(router.stored),
        "stored_ids": len(stored),
        "lost_ids": len(router.stored - stored),
        "buffered_ids_not_stored": len(router.buffered - stored),
        "stored_ids_unacknowledged": len(stored - router.stored),
        "stale_writer_rows": stale_rows(rows, router.sent_to, sorted(system.holders)),
    }


async def count_rows(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS stored, count(*) - count(DISTINCT outcome_id) AS dup_ids,
                      (SELECT coalesce(sum(n - 1), 0) FROM (
                          SELECT count(*) AS n FROM tuner_outcome
                          GROUP BY model, finished_at, latency_seconds, ttft_seconds
                          HAVING count(*) > 1) d) AS dup_content
               FROM tuner_outcome"""
        )
    finally:
        await conn.close()
    return {k: int(v) for k, v in row.items()}


async def run(args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="faults-", dir="/tmp"))
    system = await start_system(root, args.time_scale, args.cooldown, args.delay)
    traffic = Traffic(system.gateway_url, args.clients)
    driver = asyncio.create_task(traffic.run())
    polling = asyncio.Event()
    poller = asyncio.create_task(poll_holders(system, polling))
    faults: list[dict] = []
    try:
        await asyncio.sleep(args.warmup)  # benchmark pacing: let templates be learned before faults
        base_before = await system.gw()
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(args.baseline)
        base_after = await system.gw()
        _baseline_n, baseline_mean, baseline_p99 = histogram_delta(
            base_before, base_after, "optimizer_plugin_overhead_seconds"
        )
        baseline_requests, baseline_failed = traffic.window(start, asyncio.get_running_loop().time())
        selected = [f for f in FAULTS if not args.only or f.name in args.only.split(",")]
        for fault in selected:
            faults.append(await run_fault(system, traffic, fault, args.fault_seconds, args.delay))
            print(json.dumps(faults[-1]), file=sys.stderr, flush=True)
        traffic.stop()
        await driver
        final = await settle(system)
        rows = await count_rows(system.postgres.dsn)
        polling.set()
        await poller
        ids = await id_figures(system)
    finally:
        traffic.stop()
        driver.cancel()
        polling.set()
        await system.matcher_relay.stop()
        system.stop()
    failovers = [f["failover_s"] for f in faults if f["failover_s"] is not None]
    hung = [f["hung_writer_failover_s"] for f in faults if f["hung_writer_failover_s"] is not None]
    acked, completed = _acked(final), _completed(final)
    return {
        "benchmark": "faults",
        "requests": len(traffic.records),
        "failed_requests": sum(1 for _, ok, _ in traffic.records if not ok),
        "lost_rows": max(0, acked - rows["stored"]),
        "duplicate_rows": rows["dup_ids"] + rows["dup_content"],
        **ids,
        "duplicate_ids": rows["dup_ids"] + rows["dup_content"],
        "failover_s": max(failovers) if failovers else None,
        "hung_writer_failover_s": max(hung) if hung else None,
        "summary_failed": sum(f["summary_failed"] for f in faults),
        "overhead_ms_p99_during_outage": max(f["overhead_ms_p99_during_outage"] for f in faults),
        "overhead_ms_p99_breaker_open": max(f["overhead_ms_p99_breaker_open"] for f in faults),
        "overhead_ms_added_mean_breaker_open": round(
            max(
                0.0,
                *(
                    f["overhead_ms_mean_breaker_open"] - baseline_mean * 1e3
                    for f in faults
                    if f["breaker_open_samples"]
                ),
            ),
            2,
        ),
        "overhead_ms_p99_baseline": baseline_p99 * 1e3,
        "overhead_ms_mean_baseline": round(baseline_mean * 1e3, 2),
        "baseline_requests": baseline_requests,
        "baseline_failed": baseline_failed,
        "outcomes_completed": completed,
        "outcomes_acknowledged": acked,
        "rows_stored": rows["stored"],
        "outcomes_dropped_and_counted": completed - acked,
        "stored_though_unacknowledged": max(0, rows["stored"] - acked),
        "gateway_restarts": 0,
        "faults": faults,
        "errors_sample": traffic.errors[:5],
        "config": {
            "clients": args.clients,
            "fault_seconds": args.fault_seconds,
            "slow_delay_s": args.delay,
            "breaker_cooldown_s": args.cooldown,
            "learning_breaker_cooldown_s": args.cooldown,
            "emulator_time_scale": args.time_scale,
            "plugin_budget_ms": 50,
            "logs": str(root / "logs"),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--fault-seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--baseline", type=float, default=5.0)
    p.add_argument("--delay", type=float, default=0.2, help="slow stand-in: seconds added to every answer")
    p.add_argument("--cooldown", type=float, default=2.0, help="plugin breaker cool-down (OPT_BREAKER_COOLDOWN_S)")
    p.add_argument("--time-scale", type=float, default=200.0)
    p.add_argument("--only", default="", help="comma-separated fault names (" + ",".join(f.name for f in FAULTS) + ")")
    args = p.parse_args(argv)
    unknown = sorted(set(filter(None, args.only.split(","))) - {f.name for f in FAULTS})
    if unknown:
        p.error(f"unknown fault name(s) in --only: {', '.join(unknown)}")
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
