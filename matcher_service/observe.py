"""Observe: fold an observation into its template, or create one, in one transaction.

Concurrency. Folds of one template serialise on its row lock (SELECT ... FOR UPDATE) and
every vote update is a single atomic upsert, so no update is lost. Creation happens under
transaction-level advisory locks followed by a re-lookup, so concurrent first sightings
of a template create it once (READ COMMITTED: the re-lookup sees what the lock holder
committed); the locks are those of the query's fingerprint blocks (``store.creation_lock_keys``),
so creations of unrelated templates do not wait for each other. A rare lock-order deadlock is retried.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ollama_optimizer.db import DbConn

from . import store
from .learning import Candidate, WindowState, decide, diverged_head, young_branches
from .settings import MatcherSettings
from .store import Query

DEADLOCK_ATTEMPTS = 3
# A template's majority fingerprints are settled after this many observations: from then on one
# observation in VOTE_SAMPLE adds its votes (the others only count), unless it brings a window the
# template lacks or moves the stable window.
SETTLED_OBSERVATIONS = 64
VOTE_SAMPLE = 16
# Templates sharing a diverged head with fewer observations than this are merged into its open tail.
ABSORB_BELOW = 2  # single prompts only (one may have been folded into since the lookup)


@dataclass(frozen=True)
class ObserveOutcome:
    template_id: int
    created: bool
    stable_window: int
    observations: int
    window_change: str | None = None


async def observe_batch(pool: asyncpg.Pool, queries: list[Query], settings: MatcherSettings) -> list[ObserveOutcome]:
    """Observe every query in turn on one connection, each in its own short transaction (a few locks held
    briefly; commits do not wait for the WAL flush, see ``store.SESSION_SETTINGS``). Outcomes in order."""
    outcomes = []
    async with pool.acquire() as conn:
        for query in queries:
            outcomes.append(await _observe_retrying(conn, query, settings))
    return outcomes


async def _observe_retrying(conn: DbConn, query: Query, settings: MatcherSettings) -> ObserveOutcome:
    for attempt in range(DEADLOCK_ATTEMPTS):
        try:
            async with conn.transaction():
                return await _observe(conn, query, settings)
        except asyncpg.DeadlockDetectedError:
            if attempt == DEADLOCK_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _observe(conn: DbConn, query: Query, settings: MatcherSettings) -> ObserveOutcome:
    ranked = await store.candidates(conn, query)
    if not ranked:
        await store.take_creation_lock(conn, query)
        ranked = await store.candidates(conn, query)
        if not ranked:
            return await _create(conn, query)
    outcome = await _fold_into_first(conn, ranked, query, settings)
    if outcome is not None:
        return outcome
    # None takes it: a new (sibling) template, unless a concurrent observation just created one that covers
    # it, or the prompts sharing this head differ right after it (an open tail).
    await store.take_creation_lock(conn, query)
    tried = {c.template_id for c in ranked}
    ranked = await store.candidates(conn, query)
    fresh = [c for c in ranked if c.template_id not in tried and c.covers(query.largest_window)]
    outcome = await _fold_into_first(conn, fresh, query, settings)
    if outcome is not None:
        return outcome
    diverged = diverged_head(ranked, settings.near_bits, query.largest_window, settings.threshold)
    if diverged is not None:
        outcome = await _open_tail(conn, *diverged, query)
        if outcome is not None:
            return outcome
    return await _create(conn, query)


async def _fold_into_first(
    conn: DbConn, ranked: list[Candidate], query: Query, settings: MatcherSettings
) -> ObserveOutcome | None:
    """Fold into the first of ``ranked`` (best first) that takes the query; None when none does."""
    for candidate in ranked:
        outcome = await _fold_into(conn, candidate, query, settings)
        if outcome is not None:
            return outcome
    return None


async def _open_tail(conn: DbConn, head: Candidate, branches: list[Candidate], query: Query) -> ObserveOutcome | None:
    """``head`` (``learning.diverged_head``) becomes the open tail of its head, absorbs the single-prompt
    branches sharing it (``branches``) and takes the observation; templates whose prompts repeated past the
    head stay siblings."""
    if await store.lock_template(conn, head.template_id) is None:
        return None
    window = min(head.window, head.stable_window)
    others = [c.template_id for c in young_branches(branches) if c.template_id != head.template_id]
    await store.open_tail(conn, head.template_id, window, others, ABSORB_BELOW)
    observations, stable = await store.fold(conn, head.template_id, query, head.distance, WindowState(window))
    return ObserveOutcome(head.template_id, False, stable, observations, "shrink")


async def _create(conn: DbConn, query: Query) -> ObserveOutcome:
    template_id = await store.create_template(conn, query)
    return ObserveOutcome(template_id, True, query.largest_window, 1)


async def _fold_into(
    conn: DbConn, candidate: Candidate, query: Query, settings: MatcherSettings
) -> ObserveOutcome | None:
    """Fold under the template's row lock; None when the rules say: create a new template instead."""
    if not candidate.consistent(query.largest_window):  # a sibling sharing a prefix
        return None
    state = await store.lock_template(conn, candidate.template_id)
    if state is None:  # deleted by retention meanwhile
        return None
    decision = decide(
        state,
        candidate.window,
        query.largest_window,
        settings.grow_after,
        settings.shrink_after,
        candidate.near(settings.near_bits, query.largest_window),
        grows=not candidate.open_tail,
    )
    if not decision.fold:
        await store.record_shrink_evidence(conn, candidate.template_id, decision.state)
        return None
    observations, stable = await store.fold(
        conn, candidate.template_id, query, candidate.distance, decision.state, votes=_votes(candidate, decision.change)
    )
    return ObserveOutcome(candidate.template_id, False, stable, observations, decision.change)


def _votes(candidate: Candidate, change: str | None) -> bool:
    """Whether this fold adds its votes to the template's fingerprints (see SETTLED_OBSERVATIONS)."""
    settled = candidate.observations >= SETTLED_OBSERVATIONS and candidate.unseen == 0 and change is None
    return not settled or candidate.observations % VOTE_SAMPLE == 0
