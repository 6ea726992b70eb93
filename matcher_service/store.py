"""SQL of the matcher: block-index lookup, template creation, vote folding, admin reads, retention."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .blocks import BLOCKS, Probes, to_signed, to_unsigned
from .learning import Candidate, WindowState
from .settings import WINDOWS

# Session settings of the matcher's pool: the lookup is planned once (generic plan of the prepared
# statement, no per-call planning) and never fans out to parallel workers.
SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan", "max_parallel_workers_per_gather": "0"}


async def keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset of the matcher: nothing to undo (no LISTEN, session locks or SET), so no reset query."""


SLOTS = len(WINDOWS)  # one slot per window, largest first; unused slots get empty key arrays
_SLOT_PARAMS = 3 + BLOCKS  # window, query fp, k, one key array per block position
# $1 algorithm version, $2 the query's largest window, $3/$4 all the query's windows/fingerprints,
# $5 the query's k(W) per window.
_FIRST_SLOT_PARAM = 6
_RANDOM_BITS = 32  # expected distance of unrelated fingerprints: a window the template lacks
_NEAR_FACTOR = 3  # "near" at the next larger window: within 3 k(W) (slot fills), not a sibling


def _distance(template: str, window: str) -> str:
    """Distance between the query and ``template``'s representative at ``window`` (NULL when it has none)."""
    return f"""(SELECT bit_count((f.fp # q.q)::bit(64)) FROM unnest($3::integer[], $4::bigint[]) AS q(w, q)
                JOIN matcher_fingerprint f ON f.template_id = {template} AND f.window_size = q.w
                WHERE q.w = {window})"""


def _slot(slot: int) -> str:
    """Best candidate at one window: an index-only `= ANY` scan per block position, rechecked inside the scan.

    Ranked (learning.Candidate): covering, reaching the template's own stable window, closeness
    beyond the window (sum of the distances at the query's larger windows), distance, observations.
    """
    w, q, k = (f"${_FIRST_SLOT_PARAM + slot * _SLOT_PARAMS + i}" for i in range(3))
    d = f"bit_count((fp # {q}::bigint)::bit(64))"
    scans = " UNION ALL ".join(
        f"SELECT template_id, {d} AS d FROM matcher_fingerprint"
        f" WHERE k{b} = ANY(${_FIRST_SLOT_PARAM + slot * _SLOT_PARAMS + 3 + b}::integer[]) AND {d} <= {k}::integer"
        for b in range(BLOCKS))
    return f"""(SELECT c.template_id, {w}::integer AS window_size, c.d, t.observations, t.stable_window,
            t.shortest_window, b.beyond, b.unseen, b.next_near,
            {_distance("c.template_id", "t.stable_window")} AS stable_distance
     FROM ({scans}) c JOIN matcher_template t ON t.id = c.template_id AND t.algorithm_version = $1
     CROSS JOIN LATERAL (
        SELECT COALESCE(sum(bit_count((f.fp # q.q)::bit(64))), 0) + {_RANDOM_BITS} * (count(*) - count(f.fp)) AS beyond,
               (count(*) - count(f.fp))::integer AS unseen,
               (array_agg(bit_count((f.fp # q.q)::bit(64)) <= {_NEAR_FACTOR} * q.k ORDER BY q.w)
                   FILTER (WHERE f.fp IS NOT NULL))[1] AS next_near
        FROM unnest($3::integer[], $4::bigint[], $5::integer[]) AS q(w, q, k)
        LEFT JOIN matcher_fingerprint f ON f.template_id = c.template_id AND f.window_size = q.w
        WHERE q.w > {w}::integer) b
     ORDER BY ($2 >= t.shortest_window AND b.unseen <= 1  -- learning.Candidate.covers AND b.next_near IS NOT false
               AND ({w}::integer >= t.stable_window OR ({w}::integer = $2 AND 2 * $2 >= t.stable_window))) DESC,
              {w}::integer >= t.stable_window DESC,
              b.beyond, c.d, t.observations DESC, t.id
     LIMIT 1)"""


# One round trip for all windows, largest first: the first window with a candidate within k(W)
# answers (Append under LIMIT 1 stops there). Misses scan every window; each probe is one
# btree scan with many keys.
LOOKUP_SQL = "\nUNION ALL\n".join(_slot(s) for s in range(SLOTS)) + "\nLIMIT 1"

CREATE_SQL = """
WITH t AS (
    INSERT INTO matcher_template (algorithm_version, stable_window, shortest_window) VALUES ($1, $2, $2)
    RETURNING id
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
    shortest_window = least(shortest_window, $7),
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
    thresholds: tuple[int, ...]  # k(W) per window
    probes: Probes

    @property
    def signed(self) -> list[int]:
        return [to_signed(fp) for fp in self.fingerprints]

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


def lookup_args(query: Query) -> tuple:
    """Parameters of LOOKUP_SQL for ``query``."""
    args: list = [query.version, query.largest_window, list(query.windows), query.signed, list(query.thresholds)]
    slots = sorted(zip(query.windows, query.signed, query.thresholds, query.probes.per_window), reverse=True)
    for w, q, k, keys in slots:
        args += [w, q, k, *keys]
    args += [0, 0, 0, *([[]] * BLOCKS)] * (SLOTS - len(slots))
    return tuple(args)


async def lookup(conn: asyncpg.Connection | asyncpg.Pool, query: Query, timeout: float | None = None) -> Candidate | None:
    """The best candidate template for the query, or None."""
    row = await conn.fetchrow(LOOKUP_SQL, *lookup_args(query), timeout=timeout)
    return None if row is None else Candidate(*row)


async def create_template(conn: asyncpg.Connection, query: Query) -> int:
    rows = await conn.fetch(CREATE_SQL, query.version, query.largest_window, list(query.windows), query.signed)
    return int(rows[0]["template_id"])


async def lock_template(conn: asyncpg.Connection, template_id: int) -> WindowState | None:
    row = await conn.fetchrow(LOCK_SQL, template_id)
    return None if row is None else WindowState(*row)


async def fold(conn: asyncpg.Connection, template_id: int, query: Query, distance: int,
               state: WindowState) -> tuple[int, int]:
    """Add the query's votes and update the template row; returns (observations, stable window)."""
    await conn.execute(FOLD_FINGERPRINTS_SQL, template_id, list(query.windows), query.signed)
    row = await conn.fetchrow(FOLD_TEMPLATE_SQL, template_id, float(distance), state.stable_window,
                              state.shrink_streak, state.grow_streak, state.grow_window, query.largest_window)
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
