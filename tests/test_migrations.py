"""Online-safe migrations: upgrades from every earlier schema version with data in it, the previous
releases' queries after the expand step, contract only on request, checksums of applied files.

A database "at version N" is built as the releases did it: the files as released (0003's released text
is kept in tests/migration_history), all in one transaction, recorded without a checksum.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
import pytest

from matcher_service.main import start_matcher
from matcher_service.settings import MatcherSettings
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2 as pb
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2_grpc
from ollama_optimizer.migrations import (
    MIGRATIONS_DIR,
    SUPERSEDED,
    MigrationError,
    apply_migrations,
    discover,
    missing_expand_steps,
    statements,
)
from prompt_fingerprint import fingerprint
from tuner_service import store as tuner_store

from matcher_fixtures import TEST_MATCHER_SETTINGS, prompt

HISTORY = Path(__file__).parent / "migration_history"
MODEL = "llama3.1:8b"
RELEASED_VERSIONS = [0, 1, 2, 3, 4]
CONTRACT_STEPS = [m.version for m in discover() if m.contract]

# The matcher's writes as released before 0003 (matcher_service/store.py at 8e7b298), which read and
# fill the b0..b3 block columns the contract step drops.
OLD_CREATE_SQL = """
WITH t AS (
    INSERT INTO matcher_template (algorithm_version, stable_window) VALUES ($1, $2) RETURNING id
)
INSERT INTO matcher_fingerprint (template_id, window_size, fp)
SELECT t.id, u.w, u.q FROM t, unnest($3::integer[], $4::bigint[]) AS u(w, q)
RETURNING template_id"""
OLD_FOLD_FINGERPRINTS_SQL = """
INSERT INTO matcher_fingerprint AS f (template_id, window_size, fp)
SELECT $1, u.w, u.q FROM unnest($2::integer[], $3::bigint[]) AS u(w, q)
ON CONFLICT (template_id, window_size) DO UPDATE SET
    votes = matcher_add_votes(COALESCE(f.votes, matcher_fp_bits(f.fp)), matcher_fp_bits(EXCLUDED.fp)),
    count = f.count + 1,
    fp = matcher_majority(
        matcher_add_votes(COALESCE(f.votes, matcher_fp_bits(f.fp)), matcher_fp_bits(EXCLUDED.fp)),
        f.count + 1, f.fp)"""
OLD_BLOCK_PROBE_SQL = "SELECT template_id FROM matcher_fingerprint WHERE b{block} = $1 AND window_size = $2"


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _released_text(version: int) -> str:
    kept = HISTORY / f"{version:04d}_matcher_probe_keys.sql"
    if kept.exists():
        return kept.read_text()
    return next(m.sql for m in discover() if m.version == version)


async def _migrate_as_released(conn: asyncpg.Connection, version: int) -> None:
    """What the releases' runner did: pending files in one transaction, versions without checksums."""
    async with conn.transaction():
        await conn.execute("""CREATE TABLE sys_schema_version (version integer PRIMARY KEY, name text NOT NULL,
                                  applied_at timestamptz NOT NULL DEFAULT now())""")
        for migration in discover():
            if migration.version <= version:
                await conn.execute(_released_text(migration.version))
                await conn.execute(
                    "INSERT INTO sys_schema_version (version, name) VALUES ($1, $2)", migration.version, migration.name
                )


def _key(window: int, fp_signed: int, block: int) -> int:
    return (window << 16) | ((fp_signed >> (16 * block)) & 0xFFFF)


async def _seed(conn: asyncpg.Connection, version: int, texts: list[str]) -> dict[str, int]:
    """Data a release at ``version`` wrote: one template per text (its real fingerprints), tuner rows."""
    ids: dict[str, int] = {}
    if version >= 1:
        settings = MatcherSettings()
        for text in texts:
            fps = fingerprint(text, settings.shingle_size, settings.normalize)
            ids[text] = await conn.fetchval(
                "INSERT INTO matcher_template (algorithm_version, stable_window) VALUES ($1, $2) RETURNING id",
                fps.version,
                fps.largest_window,
            )
            await conn.executemany(
                "INSERT INTO matcher_fingerprint (template_id, window_size, fp) VALUES ($1, $2, $3)",
                [(ids[text], w, _signed(fp)) for w, fp in zip(fps.windows, fps.fingerprints)],
            )
    if version >= 2:
        await conn.execute(
            "INSERT INTO tuner_outcome (outcome_id, model, template_id, action, num_ctx, finished_at) "
            "VALUES ('before-upgrade', $1, 7, 2, 4096, now())",
            MODEL,
        )
        await conn.execute("INSERT INTO tuner_model (model, managed, loaded_num_ctx) VALUES ($1, true, 4096)", MODEL)
        await conn.execute(
            "INSERT INTO tuner_rule (model, template_id, param, value, sample_count) "
            "VALUES ($1, 7, 'num_ctx', 4096, 12)",
            MODEL,
        )
        await conn.execute("INSERT INTO tuner_arm (model, size_class, num_batch, pulls) VALUES ($1, 1, 512, 3)", MODEL)
    return ids


async def _assert_probe_keys_complete(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT window_size, fp, k0, k1, k2, k3 FROM matcher_fingerprint")
    for row in rows:
        assert [row[f"k{b}"] for b in range(4)] == [_key(row["window_size"], row["fp"], b) for b in range(4)]
    valid = await conn.fetchval(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname LIKE 'matcher_probe_k%_idx' AND i.indisvalid"
    )
    assert valid == 4
    # every row carries its template's stable window (the probe indexes' order), also rows old releases wrote
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM matcher_fingerprint f JOIN matcher_template t "
            "ON t.id = f.template_id WHERE f.stable_window IS DISTINCT FROM t.stable_window"
        )
        == 0
    )


async def _match_observe(pool: asyncpg.Pool, known: str) -> None:
    """The current matcher (the previous release's queries, unchanged) serves over the upgraded schema."""
    matcher = await start_matcher(pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), TEST_MATCHER_SETTINGS)
    try:
        async with grpc.aio.insecure_channel(matcher.address) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            if known:
                assert (await stub.Match(pb.MatchRequest(model=MODEL, text=known))).matched
            fresh = prompt(991, 600)
            miss = await stub.Match(pb.MatchRequest(model=MODEL, text=fresh))
            assert not miss.matched
            assert (await stub.Observe(pb.ObserveRequest(model=MODEL, fingerprints=miss.fingerprints))).created
            hit = await stub.Match(pb.MatchRequest(model=MODEL, text=fresh + " w1x"))
            assert hit.matched
            folded = await stub.Observe(
                pb.ObserveRequest(model=MODEL, fingerprints=hit.fingerprints, template_id=hit.template_id)
            )
            assert not folded.created
    finally:
        await matcher.stop(0)


async def _tuner_queries(conn: asyncpg.Connection) -> None:
    state = await tuner_store.load_state(conn)
    assert MODEL in state
    blank = {"text": "", "bool": False}
    values = {column: blank.get(kind, 0) for column, kind in tuner_store.OUTCOME_FIELDS}
    values.update(
        outcome_id="after-upgrade",
        model=MODEL,
        done_reason="stop",
        counts_known=True,
        action=2,
        finished_at=time.time(),
    )
    await tuner_store.write_outcomes(conn, [tuner_store.outcome_row(values)])
    assert await conn.fetchval("SELECT count(*) FROM tuner_outcome") == 2
    assert await tuner_store.summary(conn, 3600.0, "")


@pytest.mark.parametrize("version", RELEASED_VERSIONS)
async def test_upgrade_from_every_released_schema_with_data(version: int, empty_dsn: str) -> None:
    texts = [prompt(seed, 300 + 40 * seed) for seed in range(6)]
    conn = await asyncpg.connect(empty_dsn)
    try:
        if version:
            await _migrate_as_released(conn, version)
        ids = await _seed(conn, version, texts)

        report = await apply_migrations(empty_dsn)

        expected_pending = CONTRACT_STEPS if version else []
        assert report.contract_pending == expected_pending
        later = [m.version for m in discover() if m.version > version]
        assert sorted(report.applied + report.contract_pending) == later
        assert await missing_expand_steps(empty_dsn) == []
        await _assert_probe_keys_complete(conn)
        recorded = dict(await conn.fetch("SELECT version, checksum FROM sys_schema_version"))
        assert all(recorded.values())
        if version >= 3:
            assert recorded[3] == SUPERSEDED[3]  # the released text it ran, not today's file
        if 1 <= version < 3:  # a pre-0003 matcher still runs: its block columns and writes work
            await _old_matcher_writes_and_probes(conn, texts[0], ids[texts[0]])
        pool = await asyncpg.create_pool(empty_dsn, min_size=1, max_size=4)
        try:
            await _match_observe(pool, texts[1] if version else "")
        finally:
            await pool.close()
        if version >= 2:
            await _tuner_queries(conn)

        contracted = await apply_migrations(empty_dsn, contract=True)
        assert contracted.applied == expected_pending and contracted.contract_pending == []
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE "
                "table_name = 'matcher_fingerprint' AND column_name LIKE 'b_'"
            )
            == 0
        )
        await _assert_probe_keys_complete(conn)
        if ids:
            assert await conn.fetchval(
                "SELECT count(*) FROM matcher_template WHERE id = ANY($1::bigint[])", list(ids.values())
            ) == len(ids)
    finally:
        await conn.close()


async def _old_matcher_writes_and_probes(conn: asyncpg.Connection, text: str, template_id: int) -> None:
    settings = MatcherSettings()
    fps = fingerprint(text, settings.shingle_size, settings.normalize)
    window, fp = fps.windows[-1], _signed(fps.fingerprints[-1])
    for block in range(4):
        found = await conn.fetch(OLD_BLOCK_PROBE_SQL.format(block=block), (fp >> (16 * block)) & 0xFFFF, window)
        assert template_id in [r["template_id"] for r in found]
    other = fingerprint(prompt(77, 500), settings.shingle_size, settings.normalize)
    created = await conn.fetchval(
        OLD_CREATE_SQL,
        other.version,
        other.largest_window,
        list(other.windows),
        [_signed(x) for x in other.fingerprints],
    )
    await conn.execute(
        OLD_FOLD_FINGERPRINTS_SQL, created, list(other.windows), [_signed(x) ^ 1 for x in other.fingerprints]
    )
    await _assert_probe_keys_complete(conn)  # the trigger keys rows the old release writes


ReleasePlus = Callable[[dict[str, str]], None]


@pytest.fixture
def release_plus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReleasePlus:
    """Makes the release's migration files plus (or replaced by) the given ones the runner's directory."""

    def install(files: dict[str, str]) -> None:
        for path in MIGRATIONS_DIR.glob("*.sql"):
            (tmp_path / path.name).write_bytes(path.read_bytes())
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        monkeypatch.setattr("ollama_optimizer.migrations.MIGRATIONS_DIR", tmp_path)

    return install


async def test_fresh_database_gets_contract_steps_at_once(empty_dsn: str) -> None:
    report = await apply_migrations(empty_dsn)
    assert report.applied == [m.version for m in discover()] and report.contract_pending == []


async def test_a_changed_applied_file_is_refused(empty_dsn: str, release_plus: ReleasePlus) -> None:
    await apply_migrations(empty_dsn)
    changed = (
        MIGRATIONS_DIR / "0002_tuner.sql"
    ).read_text() + "\nCREATE INDEX IF NOT EXISTS sneaky ON tuner_rule (value);\n"
    release_plus({"0002_tuner.sql": changed})
    with pytest.raises(MigrationError, match=r"0002_tuner.sql was changed after it was applied"):
        await apply_migrations(empty_dsn)
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('sneaky')") is None
    finally:
        await conn.close()


async def test_a_new_step_applies_in_its_own_phase(empty_dsn: str, release_plus: ReleasePlus) -> None:
    await apply_migrations(empty_dsn)
    release_plus(
        {
            "0901_expand_index.sql": "-- migrate: no-transaction\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS tuner_rule_value_idx "
            "ON tuner_rule (value);\n",
            "0902_contract_drop.sql": "-- migrate: contract\nALTER TABLE tuner_arm DROP COLUMN IF EXISTS updated_at;\n",
        },
    )
    conn = await asyncpg.connect(empty_dsn)
    try:
        # An interrupted concurrent build leaves an INVALID index of that name: dropped and rebuilt.
        await conn.execute("CREATE INDEX tuner_rule_value_idx ON tuner_rule (value)")
        await conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'tuner_rule_value_idx'::regclass")
        report = await apply_migrations(empty_dsn)
        assert report.applied == [901] and report.contract_pending == [902]
        assert await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'tuner_rule_value_idx'::regclass"
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = 'tuner_arm' AND column_name = 'updated_at'"
            )
            == 1
        )
        assert (await apply_migrations(empty_dsn, contract=True)).applied == [902]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = 'tuner_arm' AND column_name = 'updated_at'"
            )
            == 0
        )
    finally:
        await conn.close()


def test_superseded_checksum_is_the_released_text() -> None:
    assert hashlib.sha256((HISTORY / "0003_matcher_probe_keys.sql").read_bytes()).hexdigest() == SUPERSEDED[3]


def test_statement_splitting_keeps_dollar_quoted_bodies_whole() -> None:
    sql = "-- c\nDO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n"
    assert statements(sql) == [
        "-- c\nDO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);",
    ]
    with pytest.raises(ValueError):
        statements("SELECT 1")


async def test_a_step_never_queues_behind_a_long_transaction(
    empty_dsn: str, release_plus: ReleasePlus, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_migrations(empty_dsn)
    release_plus(
        {"0901_expand_column.sql": "ALTER TABLE tuner_arm ADD COLUMN IF NOT EXISTS spare integer;\n"},
    )
    monkeypatch.setattr("ollama_optimizer.migrations.LOCK_TIMEOUT", "50ms")
    monkeypatch.setattr("ollama_optimizer.migrations.LOCK_ATTEMPTS", 2)
    reader = await asyncpg.connect(empty_dsn)
    try:
        reader_tx = reader.transaction()
        await reader_tx.start()
        await reader.execute("SELECT count(*) FROM tuner_arm")  # a long read holds ACCESS SHARE
        with pytest.raises(MigrationError, match=r"0901_expand_column.sql: a table stayed locked"):
            await apply_migrations(empty_dsn)
        await reader_tx.rollback()
        assert (await apply_migrations(empty_dsn)).applied == [901]
    finally:
        await reader.close()
