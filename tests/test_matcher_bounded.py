"""The lookup reads a bounded candidate set: a head shared by more templates than the bound still finds the
template that covers the query, and below the bound the answer equals ranking every stored template."""

from __future__ import annotations

import random

import asyncpg

from matcher_service import store
from matcher_service.blocks import build_probes, to_signed
from matcher_service.learning import StoredCandidate, rank
from matcher_service.settings import MatcherSettings
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2 as pb
from prompt_fingerprint import WINDOWS, fingerprint

from matcher_fixtures import prompt

HEAD_WINDOW = 128
SHARING = store.CANDIDATE_LIMIT + 20  # more templates share the head than the lookup reads


async def _insert(pool: asyncpg.Pool, version: int, fps: list[int], stable_window: int, open_tail: bool = False) -> int:
    template_id = await pool.fetchval(
        "INSERT INTO matcher_template (algorithm_version, stable_window, shortest_window, open_tail) "
        "VALUES ($1, $2, $3, $4) RETURNING id",
        version,
        stable_window,
        WINDOWS[-1],
        open_tail,
    )
    await pool.executemany(
        "INSERT INTO matcher_fingerprint (template_id, window_size, fp) VALUES ($1, $2, $3)",
        [(template_id, w, to_signed(fp)) for w, fp in zip(WINDOWS, fps)],
    )
    return template_id


def _query(settings: MatcherSettings, version: int, fps: tuple[int, ...]) -> store.Query:
    ks = tuple(settings.threshold(w) for w in WINDOWS)
    return store.Query(version, WINDOWS, fps, ks, build_probes(WINDOWS, fps, list(ks)))


async def test_shared_head_beyond_the_bound_still_matches_its_open_tail(pool, matcher_stub) -> None:
    settings = MatcherSettings()
    head = prompt(1, HEAD_WINDOW)
    head_fps = fingerprint(head + " " + prompt(2, 1000), settings.shingle_size, settings.normalize)
    version = head_fps.version
    rng = random.Random(3)
    shared = [fp if w <= HEAD_WINDOW else rng.getrandbits(64) for w, fp in zip(WINDOWS, head_fps.fingerprints)]

    def sibling() -> list[int]:  # the head, then a different fixed continuation
        return [fp if w <= HEAD_WINDOW else rng.getrandbits(64) for w, fp in zip(WINDOWS, shared)]

    for _ in range(SHARING):
        await _insert(pool, version, sibling(), stable_window=WINDOWS[-1])
    miss = await matcher_stub.Match(pb.MatchRequest(model="m", text=head + " " + prompt(4, 1000)))
    assert not miss.matched  # the siblings' continuations differ: none covers the query

    open_tail = await _insert(pool, version, sibling(), stable_window=HEAD_WINDOW, open_tail=True)  # newest id
    ranked = await store.candidates(
        pool,
        _query(
            settings,
            version,
            tuple(fingerprint(head + " " + prompt(5, 1000), settings.shingle_size, settings.normalize).fingerprints),
        ),
    )
    assert len(ranked) <= store.CANDIDATE_LIMIT
    assert ranked[0].template_id == open_tail and ranked[0].window == HEAD_WINDOW
    hit = await matcher_stub.Match(pb.MatchRequest(model="m", text=head + " " + prompt(6, 1000)))
    assert hit.matched and hit.template_id == open_tail and hit.window == HEAD_WINDOW


async def test_below_the_bound_the_lookup_ranks_every_stored_template(pool) -> None:
    settings = MatcherSettings()
    version = fingerprint("x", settings.shingle_size, settings.normalize).version
    rng = random.Random(8)
    stored: list[StoredCandidate] = []

    def near(fps: list[int], bits: int) -> list[int]:
        return [fp ^ sum(1 << b for b in rng.sample(range(64), rng.randint(0, bits))) for fp in fps]

    bases = [[rng.getrandbits(64) for _ in WINDOWS] for _ in range(6)]
    for i in range(120):
        base = bases[i % len(bases)]
        cut = rng.choice(WINDOWS)  # shares the base up to this window, random above
        fps = [fp if w <= cut else rng.getrandbits(64) for w, fp in zip(WINDOWS, near(base, 3))]
        stable = rng.choice(WINDOWS)
        observations = rng.randint(1, 5)
        template_id = await _insert(pool, version, fps, stable)
        await pool.execute("UPDATE matcher_template SET observations = $2 WHERE id = $1", template_id, observations)
        stored.append(StoredCandidate(template_id, observations, stable, WINDOWS[-1], dict(zip(WINDOWS, fps))))
    for q in range(60):
        fps = tuple(near(bases[q % len(bases)], 4))
        query = _query(settings, version, fps)
        expected = rank(query.windows, query.fingerprints, query.thresholds, stored)
        got = await store.candidates(pool, query)
        assert [(c.template_id, c.window, c.distance) for c in got] == [
            (c.template_id, c.window, c.distance) for c in expected
        ]


async def test_fingerprint_rows_follow_their_templates_stable_window(pool) -> None:
    template_id = await _insert(pool, 1, [random.Random(9).getrandbits(64) for _ in WINDOWS], WINDOWS[-1])
    await pool.execute("UPDATE matcher_template SET stable_window = 64 WHERE id = $1", template_id)
    rows = await pool.fetch("SELECT stable_window FROM matcher_fingerprint WHERE template_id = $1", template_id)
    assert [r["stable_window"] for r in rows] == [64] * len(WINDOWS)


async def test_a_window_of_the_bound_is_read_whole_and_one_more_row_reads_the_smallest_stable_windows(pool) -> None:
    settings = MatcherSettings()
    version = fingerprint("x", settings.shingle_size, settings.normalize).version
    rng = random.Random(12)
    head = [rng.getrandbits(64) for _ in WINDOWS]
    stored: list[StoredCandidate] = []
    for _ in range(store.CANDIDATE_LIMIT):  # the head up to HEAD_WINDOW, then each its own continuation
        fps = [fp if w <= HEAD_WINDOW else rng.getrandbits(64) for w, fp in zip(WINDOWS, head)]
        stable = rng.choice([w for w in WINDOWS if HEAD_WINDOW <= w < WINDOWS[-1]])
        template_id = await _insert(pool, version, fps, stable)
        stored.append(StoredCandidate(template_id, 1, stable, WINDOWS[-1], dict(zip(WINDOWS, fps))))
    query = _query(
        settings, version, tuple(fp if w <= HEAD_WINDOW else rng.getrandbits(64) for w, fp in zip(WINDOWS, head))
    )

    def ids(ranked: list) -> list[tuple[int, int, int]]:
        return [(c.template_id, c.window, c.distance) for c in ranked]

    expected = rank(query.windows, query.fingerprints, query.thresholds, stored)
    assert len(expected) == store.CANDIDATE_LIMIT
    assert ids(await store.candidates(pool, query)) == ids(expected)
    # One more, with a larger stable window than any: the window now holds more rows than the bound, and
    # the lookup reads the bound's worth with the smallest stable windows, which leaves out the newcomer.
    fps = [fp if w <= HEAD_WINDOW else rng.getrandbits(64) for w, fp in zip(WINDOWS, head)]
    newcomer = await _insert(pool, version, fps, stable_window=WINDOWS[-1])
    got = await store.candidates(pool, query)
    assert newcomer not in [c.template_id for c in got]
    assert ids(got) == ids(expected)
