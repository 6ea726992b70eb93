"""SQL of the matcher: block-index lookup, template creation, vote folding, admin reads, retention."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ollama_optimizer.db import DbConn

from .blocks import BLOCKS, Probes, to_signed, to_unsigned
from .learning import SPREAD_EVIDENCE, Candidate, StoredCandidate, WindowState, rank

# Session settings of the matcher's pool (on top of db.create_pool's, which already turn JIT off): the
# lookup is planned once per session (generic plans of its statements, no per-call planning) and never fans
# out to parallel workers. Commits do not wait for the WAL flush: the matcher writes only learning
# (observations, retention), which a database crash may lose the last moment of but never leaves
# inconsistent, as the tuner's write-behind buffer may.
SESSION_SETTINGS = {
    "plan_cache_mode": "force_generic_plan",
    "max_parallel_workers_per_gather": "0",
    "synchronous_commit": "off",
}


async def keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset of the matcher: nothing to undo (no LISTEN, session locks or SET), so no reset query."""


# Candidates read per probe key, and templates ranked in Python, at most: a miss that shares a head with
# thousands of templates costs no more than one that shares it with a few.
CANDIDATE_LIMIT = 32
NO_KEY = -1  # pads a window's row of probe keys that has none (no stored key is negative)

# One round trip. ``matcher_lookup_windows`` (migration 0041) probes every window of the query, each
# bounded: all of a window's candidates when it has at most CANDIDATE_LIMIT rows, else at most
# CANDIDATE_LIMIT per probe key, smallest stable window first. Of those, the CANDIDATE_LIMIT templates that
# may cover the query (a stable window at most twice their largest matching window), then the largest such
# window, the smallest stable window, distance and id come back with every window, so that learning.rank
# orders them in Python, each at its own match window. Exactness: with at most CANDIDATE_LIMIT candidates at
# every window, all are ranked. With more at a window, a template that covers the query there is still found
# as long as at most CANDIDATE_LIMIT of them have a stable window up to twice that window (a match covers
# only such templates, learning.covers). Among more non-covering candidates than the limit (a head shared by
# many templates, a query that continues differently), Match's answer is the same (not matched) but
# Observe's rules see the limit's worth.
LOOKUP_SQL = f"""
WITH candidate AS MATERIALIZED (
    SELECT template_id FROM matcher_lookup_windows($1, $2, $3, $4, $5, $6, $7, $8, {CANDIDATE_LIMIT})
    GROUP BY template_id
    ORDER BY min(stable_window) > 2 * max(window_size), max(window_size) DESC, min(stable_window),
        min(distance), template_id
    LIMIT {CANDIDATE_LIMIT}
)
SELECT t.id, t.observations, t.stable_window, t.shortest_window, t.open_tail, f.window_size, f.fp,
    f.compared, f.distance_sum
FROM candidate c JOIN matcher_template t ON t.id = c.template_id
JOIN matcher_fingerprint f ON f.template_id = c.template_id"""

CREATE_SQL = """
WITH t AS (
    INSERT INTO matcher_template (algorithm_version, stable_window, shortest_window) VALUES ($1, $2, $2)
    RETURNING id
)
INSERT INTO matcher_fingerprint (template_id, window_size, fp, stable_window)
SELECT t.id, u.w, u.q, $2 FROM t, unnest($3::integer[], $4::bigint[]) AS u(w, q)
RETURNING template_id"""

# Atomic per-row vote update (row lock of the upsert): votes += bits, fp = majority, and the observation's
# distance to the fingerprint before it added to the window's spread (compared, distance_sum). A new
# window's row gets the template's current stable window ($4).
FOLD_FINGERPRINTS_SQL = """
INSERT INTO matcher_fingerprint AS f (template_id, window_size, fp, stable_window)
SELECT $1, u.w, u.q, $4 FROM unnest($2::integer[], $3::bigint[]) AS u(w, q)
ON CONFLICT (template_id, window_size) DO UPDATE SET
    compared = f.compared + 1,
    distance_sum = f.distance_sum + bit_count((f.fp # EXCLUDED.fp)::bit(64)),
    votes = matcher_add_votes(COALESCE(f.votes, matcher_fp_bits(f.fp)), matcher_fp_bits(EXCLUDED.fp)),
    count = f.count + 1,
    fp = matcher_majority(
        matcher_add_votes(COALESCE(f.votes, matcher_fp_bits(f.fp)), matcher_fp_bits(EXCLUDED.fp)),
        f.count + 1, f.fp)"""

LOCK_SQL = """
SELECT stable_window, shrink_streak, grow_streak, grow_window FROM matcher_template
WHERE id = $1 FOR UPDATE"""

# ``last_seen_at`` (indexed, for retention) moves only when it is LAST_SEEN_RESOLUTION old: every other fold
# changes no indexed column, so it is a HOT update (the table keeps free space on its pages for them).
LAST_SEEN_RESOLUTION = "60 seconds"
FOLD_TEMPLATE_SQL = f"""
UPDATE matcher_template SET
    observations = observations + 1,
    mean_distance = mean_distance + ($2 - mean_distance) / observations,
    stable_window = $3, shrink_streak = $4, grow_streak = $5, grow_window = $6,
    shortest_window = least(shortest_window, $7),
    updated_at = now(),
    last_seen_at = CASE WHEN last_seen_at < now() - interval '{LAST_SEEN_RESOLUTION}' THEN now() ELSE last_seen_at END
WHERE id = $1
RETURNING observations, stable_window"""

EVIDENCE_SQL = """
UPDATE matcher_template SET shrink_streak = $2, grow_streak = 0, grow_window = 0, updated_at = now()
WHERE id = $1"""

# A template becomes the open-tail head of its prompts (``learning.diverged_head``) and absorbs the
# observations of the young templates that shared the head ($2; they are deleted in the same transaction).
OPEN_TAIL_SQL = """
UPDATE matcher_template SET open_tail = true, observations = observations + $2, stable_window = $3,
    shrink_streak = 0, grow_streak = 0, grow_window = 0
WHERE id = $1"""
ABSORB_SQL = """
DELETE FROM matcher_template WHERE id = ANY($1::bigint[]) AND NOT open_tail AND observations < $2
RETURNING observations"""

# Creation locks (``creation_lock_keys``), taken in ascending order so that two takers never deadlock.
CREATE_LOCK_SQL = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"

TEMPLATE_COLUMNS = """id, created_at, updated_at, last_seen_at, observations, mean_distance,
    stable_window, algorithm_version"""
GET_SQL = f"SELECT {TEMPLATE_COLUMNS} FROM matcher_template WHERE id = $1"
LIST_SQL = f"SELECT {TEMPLATE_COLUMNS} FROM matcher_template WHERE id > $1 ORDER BY id LIMIT $2"
WINDOWS_SQL = """
SELECT template_id, window_size, fp, count FROM matcher_fingerprint
WHERE template_id = ANY($1::bigint[]) ORDER BY template_id, window_size"""

# Stale templates: rarely observed ones, those of another algorithm version (which never match again
# once every replica runs this version: this is how a version change is migrated), and any unseen for
# the forget period ($5). Rows are taken oldest first from the last_seen_at index.
RETENTION_SQL = """
WITH doomed AS (
    SELECT id FROM matcher_template
    WHERE last_seen_at < now() - make_interval(secs => $2)
      AND (observations < $1 OR algorithm_version <> $4 OR last_seen_at < now() - make_interval(secs => $5))
    ORDER BY last_seen_at LIMIT $3
)
DELETE FROM matcher_template t USING doomed WHERE t.id = doomed.id"""
# The planner's row estimate (kept by autovacuum), and an exact count only when that is small.
ESTIMATE_SQL = "SELECT reltuples::bigint FROM pg_class WHERE oid = 'matcher_template'::regclass"
COUNT_SQL = "SELECT count(*) FROM matcher_template"
EXACT_BELOW = 10_000


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


def lookup_args(query: Query) -> tuple[object, ...]:
    """Parameters of LOOKUP_SQL for ``query``: its windows largest first, probe keys one row per window and
    block position (a short row padded with a repeat of its first key, which an index scan reads once)."""
    order = sorted(range(len(query.windows)), key=lambda i: query.windows[i], reverse=True)
    signed = query.signed
    keys = []
    for block in range(BLOCKS):
        rows = [query.probes.per_window[i][block] for i in order]
        width = max([1, *(len(row) for row in rows)])
        keys.append([row + [row[0] if row else NO_KEY] * (width - len(row)) for row in rows])
    return (
        query.version,
        [query.windows[i] for i in order],
        [signed[i] for i in order],
        [query.thresholds[i] for i in order],
        *keys,
    )


async def candidates(conn: DbConn | asyncpg.Pool, query: Query, timeout: float | None = None) -> list[Candidate]:
    """The candidate templates for the query, best first (``learning.rank``)."""
    rows = await conn.fetch(LOOKUP_SQL, *lookup_args(query), timeout=timeout)
    templates: dict[int, StoredCandidate] = {}
    for template_id, observations, stable_window, shortest_window, open_tail, window, fp, compared, total in rows:
        stored = templates.get(template_id)
        if stored is None:
            stored = templates[template_id] = StoredCandidate(
                template_id, observations, stable_window, shortest_window, {}, open_tail, {}
            )
        stored.fingerprints[window] = to_unsigned(fp)
        if compared >= SPREAD_EVIDENCE:
            stored.usual[window] = total / compared
    return rank(query.windows, query.fingerprints, query.thresholds, templates.values())


async def lookup(conn: DbConn | asyncpg.Pool, query: Query, timeout: float | None = None) -> Candidate | None:
    """The best candidate template for the query, or None."""
    ranked = await candidates(conn, query, timeout)
    return ranked[0] if ranked else None


async def open_tail(conn: DbConn, template_id: int, head_window: int, absorb: list[int], absorb_below: int) -> None:
    """Make the template the open-tail head ending at ``head_window``; delete the templates of ``absorb``
    with fewer than ``absorb_below`` observations, adding their observations to it."""
    absorbed = await conn.fetch(ABSORB_SQL, absorb, absorb_below) if absorb else []
    await conn.execute(OPEN_TAIL_SQL, template_id, sum(r["observations"] for r in absorbed), head_window)


async def create_template(conn: DbConn, query: Query) -> int:
    rows = await conn.fetch(CREATE_SQL, query.version, query.largest_window, list(query.windows), query.signed)
    return int(rows[0]["template_id"])


async def lock_template(conn: DbConn, template_id: int) -> WindowState | None:
    row = await conn.fetchrow(LOCK_SQL, template_id)
    return None if row is None else WindowState(*row)


async def fold(
    conn: DbConn, template_id: int, query: Query, distance: int, state: WindowState, votes: bool = True
) -> tuple[int, int]:
    """Add the query's votes and spread (unless not ``votes``) and update the template row; returns
    (observations, stable window)."""
    if votes:
        await conn.execute(FOLD_FINGERPRINTS_SQL, template_id, list(query.windows), query.signed, state.stable_window)
    row = await conn.fetchrow(
        FOLD_TEMPLATE_SQL,
        template_id,
        float(distance),
        state.stable_window,
        state.shrink_streak,
        state.grow_streak,
        state.grow_window,
        query.largest_window,
    )
    assert row is not None, "fold runs on a template row locked by lock_template"
    return int(row["observations"]), int(row["stable_window"])


async def record_shrink_evidence(conn: DbConn, template_id: int, state: WindowState) -> None:
    await conn.execute(EVIDENCE_SQL, template_id, state.shrink_streak)


def creation_lock_keys(query: Query) -> list[int]:
    """Advisory lock keys that serialise the creations two queries could make of one template, and only those.

    At each window W the query's fingerprint is cut into k(W) + 1 blocks: two fingerprints within k(W)
    bits agree on at least one of them (pigeonhole), so two queries within k(W) of each other at some
    window (the only way one can match what the other creates) share a key there. Keys are hashes of
    (algorithm version, window, block position, block value), ascending.
    """
    keys = set()
    for window, fp, k in zip(query.windows, query.fingerprints, query.thresholds):
        bounds = [i * 64 // (k + 1) for i in range(k + 2)]
        for position, (low, high) in enumerate(itertools.pairwise(bounds)):
            block = (fp >> low) & ((1 << (high - low)) - 1)
            name = f"matcher-create:{query.version}:{window}:{position}:{block}".encode()
            keys.add(int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True))
    return sorted(keys)


async def take_creation_lock(conn: DbConn, query: Query) -> None:
    """Wait until no concurrent transaction may create a template this query could match (``creation_lock_keys``)."""
    await conn.execute(CREATE_LOCK_SQL, creation_lock_keys(query))


async def _with_windows(conn: asyncpg.Pool, rows: list[asyncpg.Record]) -> list[StoredTemplate]:
    ids = [r["id"] for r in rows]
    windows: dict[int, list[StoredWindow]] = {i: [] for i in ids}
    for w in await conn.fetch(WINDOWS_SQL, ids):
        windows[w["template_id"]].append(StoredWindow(w["window_size"], to_unsigned(w["fp"]), w["count"]))
    return [
        StoredTemplate(
            r["id"],
            r["created_at"],
            r["updated_at"],
            r["last_seen_at"],
            r["observations"],
            r["mean_distance"],
            r["stable_window"],
            r["algorithm_version"],
            tuple(windows[r["id"]]),
        )
        for r in rows
    ]


async def get_template(pool: asyncpg.Pool, template_id: int) -> StoredTemplate | None:
    row = await pool.fetchrow(GET_SQL, template_id)
    return None if row is None else (await _with_windows(pool, [row]))[0]


async def list_templates(pool: asyncpg.Pool, after_id: int, limit: int) -> list[StoredTemplate]:
    return await _with_windows(pool, await pool.fetch(LIST_SQL, after_id, limit))


async def delete_stale(
    pool: asyncpg.Pool,
    min_observations: int,
    max_idle_seconds: float,
    version: int,
    forget_seconds: float,
    batch: int = 10_000,
) -> int:
    """Delete templates idle for longer than ``max_idle_seconds`` with fewer than ``min_observations``
    or of an algorithm version other than ``version``, and all idle for longer than ``forget_seconds``; in
    batches, each its own short transaction (Match, read-only, never waits for one)."""
    deleted = 0
    while True:
        status = await pool.execute(RETENTION_SQL, min_observations, max_idle_seconds, batch, version, forget_seconds)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted


async def count_templates(pool: asyncpg.Pool) -> int:
    """Templates stored: the planner's estimate when large (no scan), else exact."""
    estimate = await pool.fetchval(ESTIMATE_SQL)
    if estimate is not None and estimate >= EXACT_BELOW:
        return int(estimate)
    return int(await pool.fetchval(COUNT_SQL))
