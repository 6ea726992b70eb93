"""Fault injection with real processes: `python -m bench.faults` (last line: one JSON object).

Postgres (a standalone postmaster), `ollama-optimizer matcher`, `tuner` and `gateway`, and the Ollama
emulator run as separate processes; closed-loop chat clients stream through the gateway. Each fault in
turn: kill -9 (matcher, tuner, Postgres, all three), SIGSTOP (hang) of each, and a slow stand-in (a relay
that delays every answer). Figures: failed user requests, request-path overhead (the gateway's
optimizer_plugin_overhead_seconds) during the outage and once the breaker is open, recovery without
restarting the gateway, and outcome rows: acknowledged by the tuner vs stored (lost, duplicated), plus
outcomes dropped and counted at the plugin while the tuner was unreachable. Each fault ends once the
gateway has recovered and the tuner has stored what it buffered (`buffer_written_s`). The services log
at WARNING; `FAULTS_LOG_LEVEL=INFO` shows more (logs under /tmp/faults-*/logs).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from bench.workload import words
from ollama_optimizer.health_check import EXIT_SERVING, check
from ollama_optimizer.migrations import apply_migrations

# ---- processes ----------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ollama_optimizer.cli"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=ROOT, user=self.user)
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process and its children (its session's process group)."""
        if self.proc is not None and self.proc.poll() is None or sig == signal.SIGKILL:
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
        argv = [str(Path(POSTGRES_BIN_PATH) / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.data), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        super().__init__("postgres", argv, os.environ, log_dir)
        self.user = "pgserver" if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def ready(self) -> bool:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=1)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            return False
        await conn.close()
        return True


class Service(Process):
    """``ollama-optimizer matcher|tuner`` with its gRPC and metrics ports."""

    def __init__(self, kind: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.grpc_port, self.metrics_port = free_port(), free_port()
        prefix = kind.upper()
        env = {**env, f"{prefix}_LISTEN": f"127.0.0.1:{self.grpc_port}",
               f"{prefix}_METRICS_PORT": str(self.metrics_port)}
        super().__init__(kind, [*CLI, kind], env, log_dir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    async def ready(self) -> bool:
        code, _ = await check(self.address, timeout=1.0)
        return code == EXIT_SERVING


class Relay:
    """A TCP relay with an adjustable delay on the answer direction: a slow stand-in without a restart."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.delay_s, self.port = target_port, 0.0, 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> "Relay":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True))

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
        if self._server is not None:
            self._server.close()


async def scrape(port: int) -> Samples:
    """Every sample of a /metrics endpoint (empty when unreachable)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as response:
            text = await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return {}
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def histogram_delta(before: Samples, after: Samples, name: str) -> tuple[int, float, float]:
    """(count, mean seconds, p99 upper bucket bound seconds) of a histogram between two scrapes."""
    buckets = sorted(
        (float(dict(labels)["le"]), after[(n, labels)] - before.get((n, labels), 0.0))
        for (n, labels) in after if n == f"{name}_bucket")
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
            body = {"model": MODEL, "stream": stream, "options": {"num_predict": 16},
                    "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": instructions + "\n" + words(rng, 20)}]}
            started = loop.time()
            ok = False
            try:
                async with session.post(self.url + "/api/chat", json=body) as response:
                    raw = await response.read()
                lines = [line for line in raw.split(b"\n") if line.strip()]
                ok = response.status == 200 and bool(lines) and json.loads(lines[-1]).get("done") is True
                if not ok:
                    self.errors.append(f"HTTP {response.status}: {raw[:200]!r}")
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
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
    tuner: Service
    emulator: Process
    gateway: Process
    matcher_relay: Relay
    tuner_relay: Relay
    gateway_port: int
    gateway_metrics: int

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    async def gw(self) -> Samples:
        return await scrape(self.gateway_metrics)

    def stop(self) -> None:
        for proc in (self.gateway, self.emulator, self.tuner, self.matcher, self.postgres):
            proc.terminate()


async def start_system(root: Path, time_scale: float, cooldown_s: float) -> System:
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    postgres = Postgres(root, logs)
    postgres.start()
    await wait_for(postgres.ready, 60, "postgres up")
    await apply_migrations(postgres.dsn)
    env = {**os.environ, "OPTIMIZER_DSN": postgres.dsn, "OPTIMIZER_LOG_LEVEL": os.environ.get("FAULTS_LOG_LEVEL", "WARNING")}
    matcher, tuner = Service("matcher", env, logs), Service("tuner", env, logs)
    for service in (matcher, tuner):
        service.start()
    for service in (matcher, tuner):
        await wait_for(service.ready, 60, f"{service.name} serving")
    matcher_relay, tuner_relay = await Relay(matcher.grpc_port).start(), await Relay(tuner.grpc_port).start()
    emu_port, gw_port, gw_metrics = free_port(), free_port(), free_port()
    emulator = Process("emulator", [sys.executable, "-m", "bench.ollama_sim", "--port", str(emu_port),
                                    "--time-scale", str(time_scale)], env, logs)
    emulator.start()
    gateway = Process("gateway", [*CLI, "gateway", "--listen", f"127.0.0.1:{gw_port}",
                                  "--upstream", f"127.0.0.1:{emu_port}"],
                      {**env, "MATCHER_ADDRESS": matcher_relay.address, "TUNER_ADDRESS": tuner_relay.address,
                       "GATEWAY_METRICS_PORT": str(gw_metrics), "OPT_PROBES": "false",
                       "OPT_BREAKER_COOLDOWN_S": str(cooldown_s)}, logs)
    gateway.start()
    system = System(root, postgres, matcher, tuner, emulator, gateway, matcher_relay, tuner_relay, gw_port,
                    gw_metrics)

    async def gateway_up() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(system.gateway_url + "/api/tags") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False
    await wait_for(gateway_up, 60, "gateway relaying")
    return system


@dataclass(frozen=True)
class Fault:
    name: str
    targets: tuple[str, ...]  # postgres | matcher | tuner
    kind: str  # kill9 | stop | slow


FAULTS = (
    Fault("kill9_matcher", ("matcher",), "kill9"),
    Fault("kill9_tuner", ("tuner",), "kill9"),
    Fault("kill9_postgres", ("postgres",), "kill9"),
    Fault("kill9_all", ("postgres", "matcher", "tuner"), "kill9"),
    Fault("sigstop_matcher", ("matcher",), "stop"),
    Fault("sigstop_tuner", ("tuner",), "stop"),
    Fault("sigstop_postgres", ("postgres",), "stop"),
    Fault("slow_matcher_and_tuner", ("matcher", "tuner"), "slow"),
)


def _proc(system: System, name: str) -> Process:
    return {"postgres": system.postgres, "matcher": system.matcher, "tuner": system.tuner}[name]


def inject(system: System, fault: Fault, delay_s: float) -> None:
    for name in fault.targets:
        if fault.kind == "kill9":
            _proc(system, name).kill9()
        elif fault.kind == "stop":
            _proc(system, name).signal_group(signal.SIGSTOP)
        else:
            relay = system.matcher_relay if name == "matcher" else system.tuner_relay
            relay.delay_s = delay_s


async def recover(system: System, fault: Fault) -> None:
    """Undo the fault (restart / SIGCONT / no delay) and wait until the processes serve again."""
    for name in fault.targets:  # in order, each serving before the next: the services need Postgres
        proc = _proc(system, name)
        if fault.kind == "kill9":
            proc.start()
        elif fault.kind == "stop":
            proc.signal_group(signal.SIGCONT)
        else:
            (system.matcher_relay if name == "matcher" else system.tuner_relay).delay_s = 0.0
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
    inject(system, fault, delay_s)
    opened_at: float | None = None
    at_open: Samples = {}
    while loop.time() - t0 < seconds:
        samples = await system.gw()
        if opened_at is None and not _breakers_closed(samples):
            opened_at, at_open = loop.time(), samples
        await asyncio.sleep(0.2)
    outage_end = await system.gw()
    t1 = loop.time()
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
    open_n, open_mean, open_p99 = (histogram_delta(at_open, outage_end, "optimizer_plugin_overhead_seconds")
                                   if opened_at else (0, 0.0, 0.0))
    requests, failed = traffic.window(t0, loop.time())
    return {
        "fault": fault.name, "requests": requests, "failed_requests": failed,
        "outage_s": round(t1 - t0, 1),
        "breaker_opened_after_s": round(opened_at - t0, 2) if opened_at else None,
        "overhead_ms_mean_during_outage": round(mean * 1e3, 2), "overhead_ms_p99_during_outage": p99 * 1e3,
        "overhead_ms_mean_breaker_open": round(open_mean * 1e3, 3), "overhead_ms_p99_breaker_open": open_p99 * 1e3,
        "overhead_samples": n, "breaker_open_samples": open_n,
        "recovery_s_after_restart": round(recovery_s, 2),
        "buffer_written_s": round(buffer_s, 2),
        "restore_s": round(t_back - t1, 2),
        "outcomes_acknowledged": _acked(after) - _acked(before),
        "outcomes_dropped_and_counted": _dropped(after) - _dropped(before),
        "passthrough_reasons": _by_label(before, after, "optimizer_plugin_passthrough_total", "reason"),
        "rpc_errors": _by_label(before, after, "optimizer_plugin_rpc_errors_total", "service,method,code"),
    }


async def _buffer_written(system: System, fault: Fault) -> float:
    """Seconds until the tuner is the writer again and has stored every outcome it buffered so far
    (what it acknowledged while Postgres was away). The next fault waits for this: a second crash
    before the buffer is written would lose it, which is the fault's cost, not the next one's."""
    first = await scrape(system.tuner.metrics_port)
    target = (value(first, "optimizer_tuner_outcomes_written_total")
              + value(first, "optimizer_tuner_outcome_buffer"))

    async def written() -> bool:
        s = await scrape(system.tuner.metrics_port)
        return (bool(s) and value(s, "optimizer_tuner_writer") == 1
                and value(s, "optimizer_tuner_outcomes_written_total") >= target)
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
        return (bool(gw) and value(gw, "optimizer_plugin_telemetry_queue_depth") == 0 and bool(tuner)
                and value(tuner, "optimizer_tuner_outcome_buffer") == 0)
    await wait_for(quiet, timeout_s, "telemetry settled", 0.2)
    return await system.gw()


async def count_rows(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS stored, count(*) - count(DISTINCT outcome_id) AS dup_ids,
                      (SELECT coalesce(sum(n - 1), 0) FROM (
                          SELECT count(*) AS n FROM tuner_outcome
                          GROUP BY model, finished_at, latency_seconds, ttft_seconds HAVING count(*) > 1) d) AS dup_content
               FROM tuner_outcome""")
    finally:
        await conn.close()
    return {k: int(v) for k, v in row.items()}


async def run(args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="faults-", dir="/tmp"))
    system = await start_system(root, args.time_scale, args.cooldown)
    traffic = Traffic(system.gateway_url, args.clients)
    driver = asyncio.create_task(traffic.run())
    faults: list[dict] = []
    try:
        await asyncio.sleep(args.warmup)  # benchmark pacing: let templates be learned before faults
        base_before = await system.gw()
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(args.baseline)
        base_after = await system.gw()
        baseline_n, baseline_mean, baseline_p99 = histogram_delta(
            base_before, base_after, "optimizer_plugin_overhead_seconds")
        baseline_requests, baseline_failed = traffic.window(start, asyncio.get_running_loop().time())
        selected = [f for f in FAULTS if not args.only or f.name in args.only.split(",")]
        for fault in selected:
            faults.append(await run_fault(system, traffic, fault, args.fault_seconds, args.delay))
            print(json.dumps(faults[-1]), file=sys.stderr, flush=True)
        traffic.stop()
        await driver
        final = await settle(system)
        rows = await count_rows(system.postgres.dsn)
    finally:
        traffic.stop()
        driver.cancel()
        await system.matcher_relay.stop()
        await system.tuner_relay.stop()
        system.stop()
    acked, completed = _acked(final), _completed(final)
    return {
        "benchmark": "faults",
        "requests": len(traffic.records),
        "failed_requests": sum(1 for _, ok, _ in traffic.records if not ok),
        "lost_rows": max(0, acked - rows["stored"]),
        "duplicate_rows": rows["dup_ids"] + rows["dup_content"],
        "overhead_ms_p99_during_outage": max(f["overhead_ms_p99_during_outage"] for f in faults),
        "overhead_ms_p99_breaker_open": max(f["overhead_ms_p99_breaker_open"] for f in faults),
        "overhead_ms_added_mean_breaker_open": round(max(
            0.0, *(f["overhead_ms_mean_breaker_open"] - baseline_mean * 1e3 for f in faults if f["breaker_open_samples"])), 2),
        "overhead_ms_p99_baseline": baseline_p99 * 1e3,
        "overhead_ms_mean_baseline": round(baseline_mean * 1e3, 2),
        "baseline_requests": baseline_requests, "baseline_failed": baseline_failed,
        "outcomes_completed": completed, "outcomes_acknowledged": acked, "rows_stored": rows["stored"],
        "outcomes_dropped_and_counted": completed - acked,
        "stored_though_unacknowledged": max(0, rows["stored"] - acked),
        "gateway_restarts": 0,
        "faults": faults,
        "errors_sample": traffic.errors[:5],
        "config": {"clients": args.clients, "fault_seconds": args.fault_seconds, "slow_delay_s": args.delay,
                   "breaker_cooldown_s": args.cooldown, "emulator_time_scale": args.time_scale,
                   "plugin_budget_ms": 50, "logs": str(root / "logs")},
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
    p.add_argument("--only", default="", help="comma-separated fault names")
    result = asyncio.run(run(p.parse_args(argv)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
