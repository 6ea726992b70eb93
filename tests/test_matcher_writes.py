"""Observe's write path: creations serialised per template (not globally) across replicas, folds that are HOT
updates, and settled templates that stop voting on every observation."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from matcher_service import store
from matcher_service.blocks import build_probes
from matcher_service.learning import WindowState
from matcher_service.main import start_matcher
from matcher_service.observe import SETTLED_OBSERVATIONS, VOTE_SAMPLE
from matcher_service.settings import MatcherSettings
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2 as pb
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2_grpc
from prompt_fingerprint import fingerprint

from matcher_fixtures import TEST_MATCHER_SETTINGS, prompt

WAIT_BOUND_SECONDS = 90.0  # a failure bound for a busy host, never a timing assertion


def _query(text: str) -> store.Query:
    settings = MatcherSettings()
    fps = fingerprint(text, settings.shingle_size, settings.normalize)
    ks = tuple(settings.threshold(w) for w in fps.windows)
    return store.Query(
        fps.version, fps.windows, fps.fingerprints, ks, build_probes(fps.windows, fps.fingerprints, list(ks))
    )


async def _fingerprints(stub: matcher_pb2_grpc.MatcherStub, text: str) -> pb.Fingerprints:
    return (await stub.Match(pb.MatchRequest(model="m", text=text))).fingerprints


async def test_concurrent_first_sightings_on_two_replicas_create_one_template(pool, matcher, matcher_stub) -> None:
    other = await start_matcher(pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), TEST_MATCHER_SETTINGS)
    try:
        async with create_channel(other.address) as channel:
            stubs = [matcher_stub, matcher_pb2_grpc.MatcherStub(channel)]
            base = prompt(21, 700)
            texts = [f"{base} tail{i}x" for i in range(12)]  # one template: only the last token differs
            fps = [await _fingerprints(stubs[0], text) for text in texts]
            answers = await asyncio.gather(
                *(stubs[i % 2].Observe(pb.ObserveRequest(model="m", fingerprints=f)) for i, f in enumerate(fps))
            )
    finally:
        await other.stop(0)
    assert sum(a.created for a in answers) == 1
    assert len({a.template_id for a in answers}) == 1
    assert await pool.fetchval("SELECT count(*) FROM matcher_template") == 1


async def test_creations_wait_only_for_creations_of_the_same_template(pool, matcher_stub) -> None:
    held = prompt(31, 600)
    near_held = f"{held} extra1x"
    unrelated = prompt(32, 600)
    conn = await pool.acquire()
    try:
        async with conn.transaction():  # another replica creating `held`, not committed yet
            await store.take_creation_lock(conn, _query(held))
            created = await store.create_template(conn, _query(held))
            answer = await matcher_stub.Observe(
                pb.ObserveRequest(model="m", fingerprints=await _fingerprints(matcher_stub, unrelated)), timeout=30
            )
            assert answer.created and answer.template_id != created  # not held up by the open creation
            near_fps = await _fingerprints(matcher_stub, near_held)
            waiting = asyncio.ensure_future(
                matcher_stub.Observe(pb.ObserveRequest(model="m", fingerprints=near_fps), timeout=30)
            )
            # Postgres announces no lock wait: poll the lock table for the waiter (bounded)
            deadline = asyncio.get_running_loop().time() + WAIT_BOUND_SECONDS
            while not await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                assert not waiting.done(), await waiting
                assert asyncio.get_running_loop().time() < deadline, "the Observe never waited on the creation lock"
                await asyncio.sleep(0.01)
    finally:
        await pool.release(conn)
    folded = await waiting
    assert not folded.created and folded.template_id == created


async def test_a_fold_changes_no_indexed_column(pool) -> None:
    query = _query(prompt(41, 500))
    async with pool.acquire() as conn:
        template_id = await store.create_template(conn, query)
        async with conn.transaction():
            for _ in range(3):
                state = await store.lock_template(conn, template_id)
                assert state is not None
                await store.fold(conn, template_id, query, 0, WindowState(state.stable_window))
            updated, hot = await conn.fetchrow(
                "SELECT pg_stat_get_xact_tuples_updated(c.oid), pg_stat_get_xact_tuples_hot_updated(c.oid) "
                "FROM pg_class c WHERE c.relname = 'matcher_template'"
            )
    assert updated == 3 and hot == 3


async def test_a_settled_template_counts_every_observation_and_votes_on_a_sample(pool, matcher_stub) -> None:
    base = prompt(51, 400)
    total = SETTLED_OBSERVATIONS + 3 * VOTE_SAMPLE
    template_id = 0
    for i in range(total):
        answer = await matcher_stub.Observe(
            pb.ObserveRequest(model="m", fingerprints=await _fingerprints(matcher_stub, f"{base} end{i}x"))
        )
        template_id = template_id or answer.template_id
        assert answer.template_id == template_id
    found = await matcher_stub.GetTemplate(pb.GetTemplateRequest(template_id=template_id))
    assert found.observations == total
    votes = {w.votes for w in found.windows}
    assert len(votes) == 1
    assert SETTLED_OBSERVATIONS <= votes.pop() <= SETTLED_OBSERVATIONS + 3 + 1
    query = _query(f"{base} end0x")
    assert (await store.lookup(pool, query)).template_id == template_id


async def test_observe_batch_folds_every_valid_item_and_lists_the_invalid(pool, matcher_stub) -> None:
    base, other = prompt(61, 500), prompt(62, 500)
    items = [
        pb.ObserveRequest(model="m", fingerprints=await _fingerprints(matcher_stub, text))
        for text in (f"{base} a1x", f"{other} b1x", f"{base} a2x", f"{base} a3x", f"{other} b2x")
    ]
    items.insert(2, pb.ObserveRequest(model="bad model!", fingerprints=items[0].fingerprints))
    answer = await matcher_stub.ObserveBatch(pb.ObserveBatchRequest(observations=items))
    assert [(r.index, "model" in r.reason) for r in answer.rejected] == [(2, True)]
    results = list(answer.results)
    assert len(results) == 6 and results[2].template_id == 0
    first, second = results[0].template_id, results[1].template_id
    assert [r.template_id for r in results] == [first, second, 0, first, first, second] and first != second
    assert [r.created for r in results] == [True, True, False, False, False, False]
    found = {
        t: (await matcher_stub.GetTemplate(pb.GetTemplateRequest(template_id=t))).observations for t in (first, second)
    }
    assert found == {first: 3, second: 2}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await matcher_stub.ObserveBatch(pb.ObserveBatchRequest())
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await pool.fetchval("SELECT sum(observations) FROM matcher_template") == 5
