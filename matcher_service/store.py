"""SQL of the matcher: block-index lookup, template creation, vote folding, admin reads, retention."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .blocks import BLOCKS, Probes, to_signed, to_unsigned
from .learning import Candidate, WindowState


def _probe_branch(block: int) -> str:
    return f"""
        SELECT f.template_id, f.window_size, bit_count((f.fp # p.q)::bit(64)) AS d, p.k
        FROM probe p JOIN matcher_fingerprint f ON f.b{block} = p.v AND f.window_size = p.w
        WHERE p.blk = {block}"""


# One round trip for all windows: index-only probes per block (UNION ALL), exact recheck,
# then the ranking of learning.Candidate: largest window, covering, distance, observations.
LOOKUP_SQL = f"""
WITH probe AS MATERIALIZED (
    SELECT * FROM unnest($1::integer[], $2::integer[], $3::integer[], $4::bigint[], $5::integer[])
        AS p(blk, w, v, q, k)
), candidate AS ({" UNION ALL ".join(_probe_branch(b) for b in range(BLOCKS))}
)
SELECT c.template_id, c.window_size, c.d, t.observations, t.stable_window
FROM candidate c JOIN matcher_template t ON t.id = c.template_id
WHERE c.d <= c.k AND t.algorithm_version = $6
ORDER BY c.window_size DESC, (c.window_size >= t.stable_window OR c.window_size = $7) DESC,
         c.d, t.observations DESC, t.id
LIMIT 1"""

CREATE_SQL = """
WITH t AS (
    INSERT INTO matcher_template (algorithm_version, stable_window) VALUES ($1, $2) RETURNING id
)
INSERT INTO matcher_fingerprint (template_id, window_size, fp)
SELECT t.id, u.w, u.q FROM t, unnest($3::integer[], $4::bigint[]) AS u(w, q)
RETURNING template_id"""

# Atomic per-row vote update (row lock of the upsert): votes += bits, fp = majority.
FOLD_FINGERPRINTS_SQL = """
INSERT INTO matcher_fingerprint AS f (template_id, window_size, fp)
SELECT $1, u.w, u.q FROM unnest($2::integer[], $3::bigint[]) AS u(w, q)
ON CONFLICT (template_id, window_size) DO UPDATE SET
    votes = matcher_add_votes(COALESCE(f.votes, matcher_fp_bits(f.fp)), matcher_fp_bits(EXCLUDED.fp)),
    count = f.count + 1,
    fp = matcher_majority(
        matcher_add_votes(COALESCE(f.votes, matcher_fp_bits(f.fp)), matcher_fp_bits(EXCLUDED.fp)),
        f.count + 1, f.fp)"""

LOCK_SQL = """
SELECT stable_window, shrink_streak, grow_streak, grow_window FROM matcher_template
WHERE id = $1 FOR UPDATE"""

FOLD_TEMPLATE_SQL = """
UPDATE matcher_template SET
    observations = observations + 1,
    mean_distance = mean_distance + ($2 - mean_distance) / observations,
    stable_window = $3, shrink_streak = $4, grow_streak = $5, grow_window = $6,
    updated_at = now(), last_seen_at = now()
WHERE id = $1
RETURNING observations, stable_window"""

EVIDENCE_SQL = """
UPDATE matcher_template SET shrink_streak = $2, grow_streak = 0, grow_window = 0, updated_at = now()
WHERE id = $1"""

# Creation lock: serialises first sightings so that concurrent ones create one template.
CREATE_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('matcher_template_create'), $1)"

TEMPLATE_COLUMNS = """id, created_at, updated_at, last_seen_at, observations, mean_distance,
    stable_window, algorithm_version"""
GET_SQL = f"SELECT {TEMPLATE_COLUMNS} FROM matcher_template WHERE id = $1"
LIST_SQL = f"SELECT {TEMPLATE_COLUMNS} FROM matcher_template WHERE id > $1 ORDER BY id LIMIT $2"
WINDOWS_SQL = """
SELECT template_id, window_size, fp, count FROM matcher_fingerprint
WHERE template_id = ANY($1::bigint[]) ORDER BY template_id, window_size"""

RETENTION_SQL = """
WITH doomed AS (
    SELECT id FROM matcher_template
    WHERE observations < $1 AND last_seen_at < now() - make_interval(secs => $2)
    ORDER BY last_seen_at LIMIT $3
)
DELETE FROM matcher_template t USING doomed WHERE t.id = doomed.id"""
COUNT_SQL = "SELECT count(*) FROM matcher_template"


@dataclass(frozen=True)
class Query:
    """Everything the lookup needs: the query's windows/fingerprints and their probes."""

    version: int
    windows: tuple[int, ...]
    fingerprints: tuple[int, ...]  # unsigned
    probes: Probes

    @property
    def largest_window(self) -> int:
        return self.windows[-1]


@dataclass(frozen=True)
class StoredWindow:
    window: int
    fingerprint: int  # unsigned
    votes: int


@dataclass(frozen=True)
class StoredTemplate:
    template_id: int
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime
    observations: int
    mean_distance: float
    stable_window: int
    algorithm_version: int
    windows: tuple[StoredWindow, ...]


async def lookup(conn: asyncpg.Connection | asyncpg.Pool, query: Query, timeout: float | None = None) -> Candidate | None:
    """The best candidate template for the query, or None."""
    p = query.probes
    row = await conn.fetchrow(LOOKUP_SQL, p.block, p.window, p.value, p.query, p.k,
                              query.version, query.largest_window, timeout=timeout)
    return None if row is None else Candidate(*row)


async def create_template(conn: asyncpg.Connection, query: Query) -> int:
    rows = await conn.fetch(CREATE_SQL, query.version, query.largest_window, list(query.windows),
                            [to_signed(fp) for fp in query.fingerprints])
    return int(rows[0]["template_id"])


async def lock_template(conn: asyncpg.Connection, template_id: int) -> WindowState | None:
    row = await conn.fetchrow(LOCK_SQL, template_id)
    return None if row is None else WindowState(*row)


async def fold(conn: asyncpg.Connection, template_id: int, query: Query, distance: int,
               state: WindowState) -> tuple[int, int]:
    """Add the query's votes and update the template row; returns (observations, stable window)."""
    await conn.execute(FOLD_FINGERPRINTS_SQL, template_id, list(query.windows),
                       [to_signed(fp) for fp in query.fingerprints])
    row = await conn.fetchrow(FOLD_TEMPLATE_SQL, template_id, float(distance), state.stable_window,
                              state.shrink_streak, state.grow_streak, state.grow_window)
    return int(row["observations"]), int(row["stable_window"])


async def record_shrink_evidence(conn: asyncpg.Connection, template_id: int, state: WindowState) -> None:
    await conn.execute(EVIDENCE_SQL, template_id, state.shrink_streak)


async def take_creation_lock(conn: asyncpg.Connection, version: int) -> None:
    await conn.execute(CREATE_LOCK_SQL, version)


async def _with_windows(conn: asyncpg.Pool, rows: list[asyncpg.Record]) -> list[StoredTemplate]:
    ids = [r["id"] for r in rows]
    windows: dict[int, list[StoredWindow]] = {i: [] for i in ids}
    for w in await conn.fetch(WINDOWS_SQL, ids):
        windows[w["template_id"]].append(StoredWindow(w["window_size"], to_unsigned(w["fp"]), w["count"]))
    return [StoredTemplate(*r, windows=tuple(windows[r["id"]])) for r in rows]


async def get_template(pool: asyncpg.Pool, template_id: int) -> StoredTemplate | None:
    row = await pool.fetchrow(GET_SQL, template_id)
    return None if row is None else (await _with_windows(pool, [row]))[0]


async def list_templates(pool: asyncpg.Pool, after_id: int, limit: int) -> list[StoredTemplate]:
    return await _with_windows(pool, await pool.fetch(LIST_SQL, after_id, limit))


async def delete_stale(pool: asyncpg.Pool, min_observations: int, max_idle_seconds: float,
                       batch: int = 10_000) -> int:
    """Delete templates with fewer than ``min_observations`` idle for longer than ``max_idle_seconds``."""
    deleted = 0
    while True:
        status = await pool.execute(RETENTION_SQL, min_observations, max_idle_seconds, batch)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted


async def count_templates(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval(COUNT_SQL))
