"""Lookup at scale: N templates × 5 windows COPYed into Postgres, then planted near-duplicates and misses.

Run: .venv/bin/python -m bench.lookup --templates 1000000 [--queries 3000] [--exact-sample 300]
     [--shared-buffers-mb 128] [--no-prewarm] [--shared-head 10000] [--database DIR]

Figures: sql_ms_* (client-observed round trip of the one lookup statement on the Unix socket),
sql_cpu_us_* (CPU time the database backend spent per lookup, from its /proc schedstat: less sensitive to
other work on a shared host than the round trip, though not immune to it),
match_ms_* (client-observed Match RPC on loopback to an `ollama-optimizer matcher` subprocess, cache off),
exact (SQL result equals a numpy
brute-force reference over all stored fingerprints, on a sample), and the SQL figures split into
planted near-duplicates (hit) and misses. With --shared-head H, H of the templates share one 128-token head
(equal fingerprints up to window 128, different fixed continuations) and ``shared_head`` reports the
same SQL and Match figures for queries that share the head and miss (their continuation is new). Unless
--no-prewarm, every page of the lookup's indexes is
read once before timing (a long-running server's steady state; pg_prewarm is not in pgserver), after a
CHECKPOINT has written the bulk load's dirty pages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from matcher_service import store
from matcher_service.blocks import build_probes
from matcher_service.settings import MatcherSettings
from ollama_optimizer.channels import create_channel
from ollama_optimizer.db import create_pool
from ollama_optimizer.embedded_pg import EmbeddedPostgres
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc
from ollama_optimizer.migrations import apply_migrations
from prompt_fingerprint import WINDOWS, algorithm_version, fingerprint

from .fingerprint import prompt_of_tokens

U64 = (1 << 64) - 1
BULK_TIMEOUT = 3600.0
SHARED_HEAD_TOKENS = 128  # the pool's 10 s command timeout is for the service, not for bulk loads


async def _wait_serving(address: str) -> None:
    async with create_channel(address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=60
        )
        async for response in watch:
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return


@contextlib.asynccontextmanager
async def matcher_process(dsn: str, **env: str) -> AsyncIterator[str]:
    """Address of a SERVING `ollama-optimizer matcher` subprocess over ``dsn`` (extra ``env``), stopped on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    env = {
        **os.environ,
        "OPTIMIZER_DSN": dsn,
        "MATCHER_LISTEN": address,
        "MATCHER_METRICS_PORT": "0",
        "OPTIMIZER_LOG_LEVEL": "WARNING",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ollama_optimizer.cli", "matcher", env=env)
    try:
        await _wait_serving(address)
        yield address
    finally:
        proc.terminate()
        await proc.wait()


@contextlib.asynccontextmanager
async def embedded_database(
    max_size: int = 10, shared_buffers_mb: int | None = None, data_dir: Path | None = None
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """(DSN, pool) of a migrated database in an embedded Postgres (its shared_buffers default unless
    ``shared_buffers_mb`` is given): in ``data_dir``, kept, when given, else throw-away."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-matcher-"))) / "pg"
        server = await asyncio.to_thread(EmbeddedPostgres, data_dir, shared_buffers_mb)
        try:
            await apply_migrations(server.uri())
            pool = await create_pool(server.uri(), 2, max_size, store.SESSION_SETTINGS, store.keep_session)
            try:
                yield server.uri(), pool
            finally:
                await pool.close()
        finally:
            await asyncio.to_thread(server.stop)


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """As timeit does: no garbage-collector pauses of this (client) process inside timed loops."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def timed_matches(stub: matcher_pb2_grpc.MatcherStub, texts: list[str]) -> tuple[list[float], int]:
    """Each Match's client-observed milliseconds, in turn, and how many matched."""
    elapsed_ms, matched = [], 0
    with no_gc_pauses():
        for text in texts:
            started = time.perf_counter()
            response = await stub.Match(matcher_pb2.MatchRequest(model="bench", text=text))
            elapsed_ms.append((time.perf_counter() - started) * 1000)
            matched += response.matched
    return elapsed_ms, matched


async def backend_cpu_reader(conn: asyncpg.Connection) -> Callable[[], float]:
    """A reader of the CPU time (microseconds) ``conn``'s database backend has run, from /proc (local server)."""
    path = Path(f"/proc/{await conn.fetchval('SELECT pg_backend_pid()')}/schedstat")
    return lambda: int(path.read_text().split()[0]) / 1000


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def _probe_key_columns(fps: np.ndarray, window: int) -> list[list[int]]:
    """k0..k3 of one window's fingerprints (as the probe-key trigger computes them)."""
    return [
        ((np.int64(window) << 16) | ((fps >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.int64)).tolist()
        for b in range(4)
    ]


async def load_fingerprints(pool: asyncpg.Pool, fps: np.ndarray, version: int) -> float:
    """COPY templates × windows (secondary indexes rebuilt after the load; triggers skipped, so the rows
    carry their probe keys and stable window as the triggers would set them); returns seconds."""
    started = time.perf_counter()
    n = fps.shape[0]
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO matcher_template (algorithm_version, stable_window)
                              SELECT $1, $2 FROM generate_series(1, $3)""",
            version,
            WINDOWS[-1],
            n,
            timeout=BULK_TIMEOUT,
        )
        indexes = await conn.fetch("""SELECT indexname, indexdef FROM pg_indexes
                                      WHERE tablename = 'matcher_fingerprint' AND indexname NOT LIKE '%\\_pkey'""")
        for index in indexes:
            await conn.execute(f"DROP INDEX {index['indexname']}")
        await conn.execute("SET session_replication_role = replica")  # skip per-row FK triggers for the bulk load
        signed = fps.astype(np.int64)
        for w_index, window in enumerate(WINDOWS):
            records = zip(
                range(1, n + 1),
                [window] * n,
                signed[:, w_index].tolist(),
                [WINDOWS[-1]] * n,
                *_probe_key_columns(fps[:, w_index], window),
            )
            await conn.copy_records_to_table(
                "matcher_fingerprint",
                records=records,
                columns=["template_id", "window_size", "fp", "stable_window", "k0", "k1", "k2", "k3"],
                timeout=BULK_TIMEOUT,
            )
        await conn.execute("RESET session_replication_role")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for index in indexes:
            await conn.execute(index["indexdef"], timeout=BULK_TIMEOUT)
        await conn.execute("VACUUM (ANALYZE) matcher_template", timeout=BULK_TIMEOUT)
        await conn.execute("VACUUM (ANALYZE) matcher_fingerprint", timeout=BULK_TIMEOUT)
        # Write the load's dirty pages now: a checkpoint flushing ~1.5 GB must not run beside the timed queries.
        await conn.execute("CHECKPOINT", timeout=BULK_TIMEOUT)
    return time.perf_counter() - started


async def prewarm(pool: asyncpg.Pool) -> float:
    """Read every page of the fingerprint table's indexes once (full index-only scans); returns seconds."""
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        for column in ("k0", "k1", "k2", "k3", "template_id"):
            await conn.fetchval(
                f"SELECT count(*) FROM matcher_fingerprint WHERE {column} > -2147483648", timeout=BULK_TIMEOUT
            )
        await conn.fetchval("SELECT count(*) FROM matcher_template WHERE id > 0", timeout=BULK_TIMEOUT)
    return time.perf_counter() - started


def is_miss(i: int) -> bool:
    """Every 4th query is a random miss; the others are planted near-duplicates."""
    return i % 4 == 3


def planted_queries(
    fps: np.ndarray, settings: MatcherSettings, count: int, rng: random.Random
) -> list[tuple[int, ...]]:
    """3/4 near-duplicates (0..k(W) flipped bits per window), 1/4 random misses."""
    queries = []
    for i in range(count):
        if is_miss(i):
            queries.append(tuple(rng.getrandbits(64) for _ in WINDOWS))
            continue
        row = fps[rng.randrange(fps.shape[0])]
        queries.append(
            tuple(
                int(fp) ^ sum(1 << b for b in rng.sample(range(64), rng.randint(0, settings.threshold(w))))
                for fp, w in zip(row, WINDOWS)
            )
        )
    return queries


def brute_force(fps: np.ndarray, query: tuple[int, ...], settings: MatcherSettings) -> tuple[int, int, int] | None:
    """(template_id, window, distance) by the lookup's ranking, scanning every stored fingerprint."""
    for w_index in reversed(range(len(WINDOWS))):
        distances = np.bitwise_count(fps[:, w_index] ^ np.uint64(query[w_index]))
        hits = np.flatnonzero(distances <= settings.threshold(WINDOWS[w_index]))
        if len(hits):
            best = min(hits, key=lambda t: (distances[t], t))  # all: 1 observation, covering
            return int(best) + 1, WINDOWS[w_index], int(distances[best])
    return None


def make_query(version: int, fps: tuple[int, ...], settings: MatcherSettings) -> store.Query:
    ks = tuple(settings.threshold(w) for w in WINDOWS)
    return store.Query(version, WINDOWS, fps, ks, build_probes(WINDOWS, fps, list(ks)))


async def run(args: argparse.Namespace) -> dict:
    settings = MatcherSettings(cache_size=0)
    version = algorithm_version(settings.shingle_size, settings.normalize)
    rng = random.Random(11)
    fps = np.random.default_rng(5).integers(0, U64, size=(args.templates, len(WINDOWS)), dtype=np.uint64, endpoint=True)
    # A few templates come from real texts, so that Match (text in) has near-duplicates to find.
    texts = [prompt_of_tokens(1100, seed) for seed in range(200)]
    for i, text in enumerate(texts):
        fps[i] = fingerprint(text, settings.shingle_size, settings.normalize).fingerprints
    head = prompt_of_tokens(SHARED_HEAD_TOKENS, 20_000)
    shared = slice(len(texts), len(texts) + args.shared_head)
    head_windows = [i for i, w in enumerate(WINDOWS) if w <= SHARED_HEAD_TOKENS]
    head_fps = fingerprint(f"{head} {texts[0]}", settings.shingle_size, settings.normalize).fingerprints
    fps[shared, : len(head_windows)] = np.array(head_fps[: len(head_windows)], dtype=np.uint64)
    async with embedded_database(shared_buffers_mb=args.shared_buffers_mb, data_dir=args.database) as (dsn, pool):
        shared_buffers = await pool.fetchval("SHOW shared_buffers")
        stored = await pool.fetchval("SELECT count(*) FROM matcher_template", timeout=BULK_TIMEOUT)
        if stored not in (0, args.templates):
            raise SystemExit(f"--database holds {stored} templates, not {args.templates}: use another directory")
        load_seconds = await load_fingerprints(pool, fps, version) if stored == 0 else None
        sizes = {
            table: await pool.fetchrow(
                "SELECT pg_total_relation_size($1::regclass) AS total, pg_indexes_size($1::regclass) AS indexes", table
            )
            for table in ("matcher_template", "matcher_fingerprint")
        }
        prewarm_seconds = await prewarm(pool) if args.prewarm else 0.0
        queries = planted_queries(fps, settings, args.queries, rng)
        sql_ms, sql_cpu_us, results = [], [], []
        async with pool.acquire() as conn:
            for fp_set in queries[:200]:  # warm-up (prepared statement, caches)
                await store.lookup(conn, make_query(version, fp_set, settings))
            backend_cpu = await backend_cpu_reader(conn)
            with no_gc_pauses():
                for fp_set in queries:
                    query = make_query(version, fp_set, settings)
                    cpu = backend_cpu()
                    started = time.perf_counter()
                    best = await store.lookup(conn, query)
                    sql_ms.append((time.perf_counter() - started) * 1000)
                    sql_cpu_us.append(backend_cpu() - cpu)
                    results.append(None if best is None else (best.template_id, best.window, best.distance))
        hit_ms = [ms for i, ms in enumerate(sql_ms) if not is_miss(i)]
        miss_ms = [ms for i, ms in enumerate(sql_ms) if is_miss(i)]
        hit_cpu = [us for i, us in enumerate(sql_cpu_us) if not is_miss(i)]
        miss_cpu = [us for i, us in enumerate(sql_cpu_us) if is_miss(i)]
        sample = rng.sample(range(len(queries)), min(args.exact_sample, len(queries)))
        exact = all(results[i] == brute_force(fps, queries[i], settings) for i in sample)

        shared_sql_ms, shared_cpu_us, shared_candidates = [], [], 0
        if args.shared_head:
            async with pool.acquire() as conn:
                backend_cpu = await backend_cpu_reader(conn)
                with no_gc_pauses():
                    for _ in range(args.queries):
                        query = make_query(
                            version,
                            (
                                *head_fps[: len(head_windows)],
                                *(rng.getrandbits(64) for _ in WINDOWS[len(head_windows) :]),
                            ),
                            settings,
                        )
                        cpu = backend_cpu()
                        started = time.perf_counter()
                        ranked = await store.candidates(conn, query)
                        shared_sql_ms.append((time.perf_counter() - started) * 1000)
                        shared_cpu_us.append(backend_cpu() - cpu)
                        shared_candidates = max(shared_candidates, len(ranked))

        shared_match_ms: list[float] = []
        shared_matched = 0
        async with matcher_process(dsn, MATCHER_CACHE_SIZE="0") as address, create_channel(address) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            match_texts = []
            for i in range(args.queries):
                words = texts[i % len(texts)].split()
                if is_miss(i):
                    words = prompt_of_tokens(1100, 10_000 + i).split()  # a miss
                else:
                    words[rng.randrange(100, len(words))] = f"edit{i}"  # one replaced token
                match_texts.append(" ".join(words))
            for text in match_texts[:100]:
                await stub.Match(matcher_pb2.MatchRequest(model="bench", text=text))
            match_ms, matched = await timed_matches(stub, match_texts)
            if args.shared_head:
                shared_texts = [f"{head} {prompt_of_tokens(1000, 30_000 + i)}" for i in range(args.queries)]
                shared_match_ms, shared_matched = await timed_matches(stub, shared_texts)
    shared_report = (
        {}
        if not args.shared_head
        else {
            "shared_head": {
                "templates": args.shared_head,
                "head_tokens": SHARED_HEAD_TOKENS,
                "queries": args.queries,
                "sql_ms_p50": percentile(shared_sql_ms, 50),
                "sql_ms_p99": percentile(shared_sql_ms, 99),
                "sql_cpu_us_p50": percentile(shared_cpu_us, 50),
                "candidates_ranked_max": shared_candidates,
                "match_ms_p50": percentile(shared_match_ms, 50),
                "match_ms_p99": percentile(shared_match_ms, 99),
                "match_matched": shared_matched,
            }
        }
    )
    return {
        "bench": "lookup",
        "templates": args.templates,
        "fingerprint_rows": args.templates * len(WINDOWS),
        "thresholds": settings.thresholds,
        "shared_buffers": shared_buffers,
        "load_seconds": None if load_seconds is None else round(load_seconds, 1),  # None: --database already loaded
        "queries": len(queries),
        "sql_hits": sum(r is not None for r in results),
        "sql_ms_p50": percentile(sql_ms, 50),
        "sql_ms_p99": percentile(sql_ms, 99),
        "sql_ms_p50_hit": percentile(hit_ms, 50),
        "sql_ms_p99_hit": percentile(hit_ms, 99),
        "sql_ms_p50_miss": percentile(miss_ms, 50),
        "sql_ms_p99_miss": percentile(miss_ms, 99),
        "sql_cpu_us_p50_hit": percentile(hit_cpu, 50),
        "sql_cpu_us_p50_miss": percentile(miss_cpu, 50),
        "prewarm_seconds": round(prewarm_seconds, 1),
        # tables with their indexes (and TOAST), and the indexes alone, in MiB per million templates
        "mib_per_million_templates": {t: round(b["total"] / 2**20 * 1e6 / args.templates, 1) for t, b in sizes.items()},
        "index_mib_per_million_templates": {
            t: round(b["indexes"] / 2**20 * 1e6 / args.templates, 1) for t, b in sizes.items()
        },
        "match_ms_p50": percentile(match_ms, 50),
        "match_ms_p99": percentile(match_ms, 99),
        "match_matched": matched,
        "exact": exact,
        "exact_sample": len(sample),
        **shared_report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--templates", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--exact-sample", type=int, default=300)
    parser.add_argument(
        "--shared-buffers-mb",
        type=int,
        help="Postgres shared_buffers in MB (default: the embedded server's, a quarter of the RAM "
        "up to 1 GiB, so that the 4 block indexes, ~0.8 GB at 1M templates, stay cached; "
        "128 = Postgres's own default)",
    )
    parser.add_argument(
        "--shared-head",
        type=int,
        default=0,
        metavar="H",
        help="H templates share one 128-token head; report lookups of queries that share it and miss",
    )
    parser.add_argument(
        "--database",
        type=Path,
        metavar="DIR",
        help="keep the embedded database in DIR; a later run with the same --templates (and --shared-head) reuses "
        "it without loading (at 10M templates the load takes tens of minutes)",
    )
    parser.add_argument(
        "--no-prewarm",
        dest="prewarm",
        action="store_false",
        help="time from cold index pages (right after the bulk load)",
    )
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
