"""Numbered schema migrations (NNNN_name.sql) in two phases, recorded with a checksum in sys_schema_version.

Expand steps (the default) only add: the previous release keeps working against the expanded schema,
so they run while it still serves. Contract steps (``-- migrate: contract`` in the file's leading
comments) remove what only older releases use: they run on request (``migrate --contract``) once no
older version runs, or at once on a database that had no schema (nothing old can be using it).

``-- migrate: no-transaction``: the statements run one by one outside a transaction (``CREATE INDEX
CONCURRENTLY``, backfills that commit batch by batch); each must be idempotent, and an index an
interrupted concurrent build left INVALID is dropped before the step runs again. Every other step runs
in its own transaction, under a lock timeout (retried), so DDL never queues the service's queries
behind it for long. Runs are serialised by an advisory lock.

The sha256 of each applied file is recorded; a file changed after it was applied is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from ..config import StartupError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_DIRECTIVE = re.compile(r"^--\s*migrate:\s*(.+)$")
_CONCURRENT_INDEX = re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.I)
# Serialises concurrent migrators; the same key as earlier releases' transaction-level lock.
_LOCK_KEY = 0x6F6C6C616D61  # "ollama"
LOCK_TIMEOUT = "5s"
LOCK_ATTEMPTS = 12
# Files changed on purpose after release, before checksums were recorded: the sha256 of the text that
# databases migrated by earlier releases applied. 0003 became online-safe for databases that had not
# applied it yet; a database that had keeps the end state of the original (generated probe-key columns,
# block columns already dropped), which every later step accepts.
SUPERSEDED = {3: "39ae0984e4c85716f9ef7b6ad8f8dcb45e41c4fa35f6e3d15ed22bfb67a8fda4"}


class MigrationError(StartupError):
    """The schema cannot be brought to (or does not have) the shape this release needs."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str
    contract: bool = False
    transactional: bool = True

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclass
class MigrationReport:
    """What one run did: versions applied now, and contract steps left for ``migrate --contract``."""

    applied: list[int] = field(default_factory=list)
    contract_pending: list[int] = field(default_factory=list)


def _directives(sql: str) -> set[str]:
    found: set[str] = set()
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        match = _DIRECTIVE.match(line.strip())
        if match:
            found.update(word.strip() for word in match.group(1).split(","))
    unknown = found - {"contract", "no-transaction"}
    if unknown:
        raise ValueError(f"unknown migration directive(s): {', '.join(sorted(unknown))}")
    return found


def discover() -> list[Migration]:
    """All migration files, ordered by version; duplicate numbers are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"bad migration file name: {path.name}")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"duplicate migration version {version}")
        raw = path.read_bytes()
        sql = raw.decode()
        flags = _directives(sql)
        found[version] = Migration(
            version,
            match.group(2),
            sql,
            hashlib.sha256(raw).hexdigest(),
            contract="contract" in flags,
            transactional="no-transaction" not in flags,
        )
    return [found[v] for v in sorted(found)]


def statements(sql: str) -> list[str]:
    """Split a no-transaction file into statements (a ``;`` ending a line outside ``$$`` quotes ends one)."""
    result: list[str] = []
    current: list[str] = []
    quoted = False
    for line in sql.splitlines():
        current.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if not quoted and line.rstrip().endswith(";"):
            text = "\n".join(current).strip()
            if any(not part.strip().startswith("--") for part in text.splitlines() if part.strip()):
                result.append(text)
            current = []
    if any(part.strip() and not part.strip().startswith("--") for part in current):
        raise ValueError("a statement in a no-transaction migration does not end with ';'")
    return result


async def _ensure_version_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS sys_schema_version (
               version integer PRIMARY KEY,
               name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now());
           ALTER TABLE sys_schema_version ADD COLUMN IF NOT EXISTS checksum text"""
    )


async def _applied(conn: asyncpg.Connection) -> dict[int, str | None]:
    exists = await conn.fetchval("SELECT to_regclass('sys_schema_version') IS NOT NULL")
    if not exists:
        return {}
    has_checksum = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns "
        "WHERE table_name = 'sys_schema_version' AND column_name = 'checksum')"
    )
    query = f"SELECT version, {'checksum' if has_checksum else 'NULL::text AS checksum'} FROM sys_schema_version"
    return {r["version"]: r["checksum"] for r in await conn.fetch(query)}


async def _verify_checksums(conn: asyncpg.Connection, known: list[Migration], applied: dict[int, str | None]) -> None:
    """Record the checksum of steps applied before checksums existed; refuse a changed applied file."""
    for migration in known:
        if migration.version not in applied:
            continue
        recorded = applied[migration.version]
        if recorded is None:  # applied by a release that recorded no checksum: the text it shipped
            recorded = SUPERSEDED.get(migration.version, migration.checksum)
            await conn.execute(
                "UPDATE sys_schema_version SET checksum = $2 WHERE version = $1", migration.version, recorded
            )
            applied[migration.version] = recorded
        if recorded not in (migration.checksum, SUPERSEDED.get(migration.version)):
            raise MigrationError(
                f"migration {migration.filename} was changed after it was applied to this database "
                f"(applied sha256 {recorded[:12]}, file {migration.checksum[:12]}): restore the file as "
                "released and put the change in a new migration"
            )


async def _drop_invalid_indexes(conn: asyncpg.Connection, sql: str) -> None:
    for name in _CONCURRENT_INDEX.findall(sql):
        invalid = await conn.fetchval(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = $1 AND pg_catalog.pg_table_is_visible(c.oid)",
            name,
        )
        if invalid:
            log.warning("dropping index %s left invalid by an interrupted concurrent build", name)
            await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


async def _run_transactional(conn: asyncpg.Connection, migration: Migration) -> None:
    """One transaction under a lock timeout, retried: waiting DDL would queue every query behind it."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await conn.execute(migration.sql)
                await _record(conn, migration)
            return
        except asyncpg.LockNotAvailableError:
            if attempt == LOCK_ATTEMPTS:
                raise MigrationError(
                    f"migration {migration.filename}: a table stayed locked by other sessions "
                    f"through {LOCK_ATTEMPTS} attempts of {LOCK_TIMEOUT}; retry later"
                ) from None
            log.warning(
                "migration %s waited %s for a lock (attempt %d); retrying", migration.filename, LOCK_TIMEOUT, attempt
            )
            await asyncio.sleep(min(attempt, 5))


async def _run_statements(conn: asyncpg.Connection, migration: Migration) -> None:
    await _drop_invalid_indexes(conn, migration.sql)
    for statement in statements(migration.sql):
        await conn.execute(statement)
    await _record(conn, migration)


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO sys_schema_version (version, name, checksum) VALUES ($1, $2, $3)",
        migration.version,
        migration.name,
        migration.checksum,
    )


async def apply_migrations(dsn: str, *, contract: bool = False) -> MigrationReport:
    """Apply every pending expand step (and contract step, with ``contract`` or on a new database)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            return await _apply(conn, contract)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, contract: bool) -> MigrationReport:
    known = discover()
    applied = await _applied(conn)
    contract = contract or not applied  # a database with no schema: nothing older can be using it
    await _ensure_version_table(conn)
    await _verify_checksums(conn, known, applied)
    report = MigrationReport()
    for migration in known:
        if migration.version in applied:
            continue
        if migration.contract and not contract:
            report.contract_pending.append(migration.version)
            continue
        if migration.transactional:
            await _run_transactional(conn, migration)
        else:
            await _run_statements(conn, migration)
        report.applied.append(migration.version)
        log.info("applied migration %s", migration.filename)
    return report


async def missing_expand_steps(dsn: str) -> list[int]:
    """Expand steps this release needs that ``dsn`` has not applied (contract steps are optional)."""
    conn = await asyncpg.connect(dsn)
    try:
        applied = await _applied(conn)
    finally:
        await conn.close()
    return [m.version for m in discover() if not m.contract and m.version not in applied]


def describe(report: MigrationReport) -> str:
    """One line for the operator."""
    text = f"applied migrations: {report.applied or 'none (schema up to date)'}"
    if report.contract_pending:
        text += (
            f"; contract steps pending: {report.contract_pending} (run `ollama-optimizer migrate --contract` "
            "once no older ollama-optimizer version uses this database)"
        )
    return text
