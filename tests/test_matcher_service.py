"""Matcher over real gRPC (loopback) and a real Postgres: round trips, learning, concurrency, bad input."""

from __future__ import annotations

import asyncio
import datetime
import random

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from matcher_service.main import start_matcher
from matcher_service.maintenance import Maintenance
from matcher_service.observe import SETTLED_OBSERVATIONS
from matcher_service.settings import MatcherSettings
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2 as pb
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2_grpc
from prompt_fingerprint import algorithm_version, windows_for

from matcher_fixtures import prompt

VERSION = algorithm_version(4, True)
MODEL = "llama3.1:8b"


SMALL = dict(w16=0x1616_1616_0000_1616, w32=0x3232_0000_3232_3232)  # the windows below 64, when not given


def fingerprints(unit_count: int, **fps: int) -> pb.Fingerprints:
    """Hand-made Observe fingerprints: ``w64=..., w128=...`` for the windows of ``unit_count`` (16 and 32
    default to SMALL)."""
    given = {**SMALL, **fps}
    return pb.Fingerprints(
        algorithm_version=VERSION,
        unit_count=unit_count,
        windows=[pb.WindowFingerprint(window=w, fingerprint=given[f"w{w}"]) for w in windows_for(unit_count)],
    )


def exact_windows(unit_count: int, head_units: int = 0, **fps: int) -> pb.Fingerprints:
    """Observe fingerprints with exactly the given windows (for inconsistent input)."""
    return pb.Fingerprints(
        algorithm_version=VERSION,
        unit_count=unit_count,
        head_units=head_units,
        windows=[pb.WindowFingerprint(window=int(k[1:]), fingerprint=v) for k, v in fps.items()],
    )


def unrelated(unit_count: int, fp: int) -> pb.Fingerprints:
    """Fingerprints ``fp`` at every window: prompts with different values share no prefix."""
    return fingerprints(unit_count, **{f"w{w}": fp for w in windows_for(unit_count)})


LONG = dict(
    w64=0xAAAA_0000_1111_2222,
    w128=0x1234_5678_9ABC_DEF0,
    w256=0x0F0F_0F0F_0F0F_0F0F,
    w512=0x5555_3333_7777_1111,
    w1024=0x0123_4567_89AB_CDEF,
)


async def observe(stub: matcher_pb2_grpc.MatcherStub, fps: pb.Fingerprints) -> pb.ObserveResponse:
    return await stub.Observe(pb.ObserveRequest(model=MODEL, fingerprints=fps))


async def count(pool: asyncpg.Pool, table: str = "matcher_template") -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def test_match_observe_round_trip(matcher_stub, pool) -> None:
    text = prompt(1, 1100)
    miss = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text=text))
    assert not miss.matched and miss.template_id == 0 and miss.prompt_units == 1100
    assert [w.window for w in miss.fingerprints.windows] == [16, 32, 64, 128, 256, 512, 1024]
    created = await matcher_stub.Observe(pb.ObserveRequest(model=MODEL, fingerprints=miss.fingerprints))
    assert created.created and created.observations == 1 and created.stable_window == 1024

    variant = text.replace(text.split()[700], "changed", 1)
    hit = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text=variant))
    assert hit.matched and hit.template_id == created.template_id and hit.window == 1024
    assert hit.distance <= 7 and hit.similarity == pytest.approx(1 - hit.distance / 64) and hit.observations == 1
    folded = await matcher_stub.Observe(
        pb.ObserveRequest(model=MODEL, fingerprints=hit.fingerprints, template_id=hit.template_id)
    )
    assert not folded.created and folded.template_id == created.template_id and folded.observations == 2

    template = await matcher_stub.GetTemplate(pb.GetTemplateRequest(template_id=created.template_id))
    assert template.observations == 2 and template.algorithm_version == VERSION
    assert [(w.window, w.votes) for w in template.windows] == [(w, 2) for w in (16, 32, 64, 128, 256, 512, 1024)]
    assert template.mean_distance == pytest.approx(hit.distance)
    assert await count(pool) == 1


async def test_short_prompt_matches_only_the_same_length(matcher_stub) -> None:
    created = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text="Summarise this: 42"))
    assert created.fingerprints.windows[0].window == 4
    await observe(matcher_stub, created.fingerprints)
    again = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text="summarise THIS: 7"))
    assert again.matched and again.window == 4 and again.distance == 0
    longer = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text="summarise this: 7 now"))
    assert not longer.matched


async def test_majority_vote_with_ties_keeping_the_previous_bit(matcher_stub) -> None:
    first = await observe(matcher_stub, fingerprints(64, w64=0b000))
    for fp in (0b001, 0b011):
        assert (await observe(matcher_stub, fingerprints(64, w64=fp))).template_id == first.template_id
    template = await matcher_stub.GetTemplate(pb.GetTemplateRequest(template_id=first.template_id))
    assert template.windows[2].fingerprint == 0b001 and template.windows[2].votes == 3
    await observe(matcher_stub, fingerprints(64, w64=0b010))  # bit 0: 2 of 4, bit 1: 2 of 4 → keep 1, 0
    template = await matcher_stub.GetTemplate(pb.GetTemplateRequest(template_id=first.template_id))
    assert template.windows[2].fingerprint == 0b001 and template.observations == 4


async def test_partial_match_shrinks_when_near_and_creates_a_sibling_when_not(matcher_stub, pool) -> None:
    base = await observe(matcher_stub, fingerprints(1100, **LONG))
    unrelated = dict(LONG, w512=LONG["w512"] ^ 0xFFFF_FFFF, w1024=LONG["w1024"] ^ 0xFFFF_FFFF_0000)  # 32 bits off
    sibling = await observe(matcher_stub, fingerprints(1100, **unrelated))
    assert sibling.created and sibling.template_id != base.template_id  # shares only the first 256 tokens
    fills = dict(LONG, w512=LONG["w512"] ^ 0xFFF0, w1024=LONG["w1024"] ^ 0xFFF00)  # 12 bits off: slot fills
    shrunk = await observe(matcher_stub, fingerprints(1100, **fills))
    assert shrunk.template_id == base.template_id and shrunk.stable_window == 256
    assert not shrunk.created and shrunk.observations == 2
    other_fills = dict(LONG, w512=LONG["w512"] ^ 0xFF_0000, w1024=LONG["w1024"] ^ 0xFF_0000)  # 8 bits > k
    assert (await observe(matcher_stub, fingerprints(1100, **other_fills))).template_id == base.template_id
    assert await count(pool) == 2


async def test_shorter_prompt_than_all_of_a_template_is_a_sibling(matcher_stub, pool) -> None:
    base = await observe(matcher_stub, fingerprints(1100, **LONG))
    head = {k: v for k, v in LONG.items() if k in ("w64", "w128", "w256")}
    short = await observe(matcher_stub, fingerprints(300, **head))  # same first 256 tokens, ends there
    assert short.created and short.template_id != base.template_id and short.stable_window == 256
    again = await observe(matcher_stub, fingerprints(300, **head))
    assert again.template_id == short.template_id and not again.created
    assert (await observe(matcher_stub, fingerprints(1100, **LONG))).template_id == base.template_id


async def test_stable_window_grows_after_consistent_larger_matches(matcher_stub, matcher_settings) -> None:
    shorter = {k: v for k, v in LONG.items() if k != "w1024"}
    created = await observe(matcher_stub, fingerprints(600, **shorter))
    assert created.stable_window == 512
    first_long = await observe(matcher_stub, fingerprints(1100, **LONG))  # matches at 512, adds 1024
    assert first_long.template_id == created.template_id and first_long.stable_window == 512
    for i in range(matcher_settings.grow_after):
        step = await observe(matcher_stub, fingerprints(1100, **LONG))
        expected = 1024 if i == matcher_settings.grow_after - 1 else 512
        assert step.template_id == created.template_id and step.stable_window == expected


async def test_much_longer_prompt_than_all_of_a_template_is_a_sibling(matcher_stub) -> None:
    head = {k: v for k, v in LONG.items() if k in ("w64", "w128", "w256")}
    short = await observe(matcher_stub, fingerprints(300, **head))
    longer = await observe(matcher_stub, fingerprints(1100, **LONG))  # two windows longer than all it has seen
    assert longer.created and longer.template_id != short.template_id


async def test_concurrent_observes_of_one_template_lose_no_update(matcher_stub, pool) -> None:
    fps = fingerprints(1100, **LONG)
    results = await asyncio.gather(*(observe(matcher_stub, fps) for _ in range(60)))
    assert sum(r.created for r in results) == 1  # concurrent first sightings: one template
    assert len({r.template_id for r in results}) == 1
    assert sorted(r.observations for r in results) == list(range(1, 61))
    more = await asyncio.gather(*(observe(matcher_stub, fps) for _ in range(50)))
    assert not any(r.created for r in more)
    template = await matcher_stub.GetTemplate(pb.GetTemplateRequest(template_id=results[0].template_id))
    assert template.observations == 110
    votes = {w.votes for w in template.windows}  # settled after SETTLED_OBSERVATIONS: votes on a sample
    assert len(votes) == 1 and SETTLED_OBSERVATIONS <= votes.pop() < 110
    assert await count(pool) == 1


async def test_cache_hit_and_invalidation_by_observe(matcher_stub) -> None:
    text = prompt(9, 300)
    first = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text=text))
    await observe(matcher_stub, first.fingerprints)  # drops the cached miss
    again = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text=text))
    assert again.matched and not again.cache_hit
    cached = await matcher_stub.Match(pb.MatchRequest(model=MODEL, text=text))
    assert cached.matched and cached.cache_hit and cached.template_id == again.template_id


async def test_list_and_get_templates(matcher_stub) -> None:
    ids = [(await observe(matcher_stub, unrelated(64, (0xFFFF << (16 * i)) | i))).template_id for i in range(3)]
    page = await matcher_stub.ListTemplates(pb.ListTemplatesRequest(limit=2))
    assert [t.template_id for t in page.templates] == ids[:2] and page.next_after_id == ids[1]
    rest = await matcher_stub.ListTemplates(pb.ListTemplatesRequest(limit=2, after_id=page.next_after_id))
    assert [t.template_id for t in rest.templates] == ids[2:] and rest.next_after_id == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await matcher_stub.GetTemplate(pb.GetTemplateRequest(template_id=ids[-1] + 100))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


BAD_CALLS = {
    "empty text": ("Match", pb.MatchRequest(model=MODEL, text="")),
    "no tokens": ("Match", pb.MatchRequest(model=MODEL, text=" \n\t ")),
    "oversize text": ("Match", pb.MatchRequest(model=MODEL, text="a" * ((1 << 20) + 1))),
    "oversize utf-8": ("Match", pb.MatchRequest(model=MODEL, text="é" * ((1 << 19) + 1))),
    "empty model": ("Match", pb.MatchRequest(model="", text="hello")),
    "bad model": ("Match", pb.MatchRequest(model="llama; DROP TABLE", text="hello")),
    "long model": ("Match", pb.MatchRequest(model="m" * 201, text="hello")),
    "observe version": (
        "Observe",
        pb.ObserveRequest(
            model=MODEL,
            fingerprints=pb.Fingerprints(
                algorithm_version=VERSION + 1, unit_count=64, windows=[pb.WindowFingerprint(window=64)]
            ),
        ),
    ),
    "observe windows": ("Observe", pb.ObserveRequest(model=MODEL, fingerprints=exact_windows(300, w64=1, w128=2))),
    "observe no windows": ("Observe", pb.ObserveRequest(model=MODEL, fingerprints=exact_windows(10))),
    "observe zero units": ("Observe", pb.ObserveRequest(model=MODEL, fingerprints=exact_windows(0, w0=1))),
    "observe bad window": ("Observe", pb.ObserveRequest(model=MODEL, fingerprints=exact_windows(100, w100=1))),
    "observe head beyond units": (
        "Observe",
        pb.ObserveRequest(model=MODEL, fingerprints=exact_windows(20, head_units=40, w16=1, w32=2)),
    ),
    "observe negative id": ("Observe", pb.ObserveRequest(model=MODEL, fingerprints=unrelated(64, 1), template_id=-1)),
    "observe bad model": ("Observe", pb.ObserveRequest(model="/x", fingerprints=unrelated(64, 1))),
    "get id 0": ("GetTemplate", pb.GetTemplateRequest(template_id=0)),
    "list limit": ("ListTemplates", pb.ListTemplatesRequest(limit=1001)),
    "list after": ("ListTemplates", pb.ListTemplatesRequest(after_id=-5)),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
async def test_bad_input_is_invalid_argument_and_writes_nothing(case, matcher_stub, pool) -> None:
    method, request = BAD_CALLS[case]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(matcher_stub, method)(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details()
    assert await count(pool) == 0 and await count(pool, "matcher_fingerprint") == 0


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_database_down_match_passes_through_observe_unavailable() -> None:
    dead_pool = await asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=0, max_size=1)
    settings = MatcherSettings(match_db_timeout=2.0)
    server = await start_matcher(dead_pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), settings)
    errors_before = _metric("optimizer_matcher_db_errors_total", operation="match")
    try:
        async with create_channel(server.address) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            answer = await stub.Match(pb.MatchRequest(model=MODEL, text=prompt(3, 100)))
            assert not answer.matched and answer.fingerprints.windows and answer.prompt_units == 100
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Observe(pb.ObserveRequest(model=MODEL, fingerprints=answer.fingerprints))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
        await dead_pool.close()
    assert _metric("optimizer_matcher_db_errors_total", operation="match") == errors_before + 1


async def test_retention_deletes_stale_low_count_templates(matcher_stub, pool) -> None:
    stale = await observe(matcher_stub, unrelated(64, 1))
    busy = await observe(matcher_stub, unrelated(64, 0xFFFF_FFFF_0000_0000))
    for _ in range(3):
        await observe(matcher_stub, unrelated(64, 0xFFFF_FFFF_0000_0000))
    fresh = await observe(matcher_stub, unrelated(64, 0x0000_FFFF_FFFF_0000))
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    await pool.execute(
        "UPDATE matcher_template SET last_seen_at = $1 WHERE id = ANY($2::bigint[])",
        old,
        [stale.template_id, busy.template_id],
    )
    await pool.execute(
        """INSERT INTO matcher_template (algorithm_version, stable_window, observations, last_seen_at)
                          VALUES ($1, 64, 500, $2)""",
        VERSION - 100,
        old,
    )  # a busy template of a past version
    settings = MatcherSettings(retention_min_observations=3, retention_max_idle=86400)
    assert await Maintenance(pool, settings).run_once() == 2
    remaining = {r["id"] for r in await pool.fetch("SELECT id FROM matcher_template")}
    assert remaining == {busy.template_id, fresh.template_id}
    assert await count(pool, "matcher_fingerprint") == 2 * len(windows_for(64))
    assert _metric("optimizer_matcher_templates") == 2


async def test_prompts_differing_right_after_a_shared_head_become_one_open_tail_template(matcher_stub, pool) -> None:
    rng = random.Random(14)
    head = dict(w16=0x1616, w32=0x3232, w64=0x6464)

    def varied() -> pb.Fingerprints:  # same head, unrelated text after it (e.g. a retrieved document)
        return fingerprints(1100, **head, **{f"w{w}": rng.getrandbits(64) for w in (128, 256, 512, 1024)})

    first, second, third = [await observe(matcher_stub, varied()) for _ in range(3)]
    assert first.created and second.created and third.created  # siblings sharing a prefix are as likely
    fourth = await observe(matcher_stub, varied())  # four continuations: the head is the template
    assert not fourth.created and fourth.template_id == first.template_id and fourth.stable_window == 64
    assert fourth.observations == 4 and await count(pool) == 1  # the others were folded into it
    assert (await observe(matcher_stub, varied())).template_id == first.template_id and await count(pool) == 1


async def test_a_template_that_repeated_past_the_head_stays_a_sibling_of_the_open_tail(matcher_stub, pool) -> None:
    rng = random.Random(16)
    head = dict(w16=0x1616, w32=0x3232, w64=0x6464)
    fixed = {f"w{w}": rng.getrandbits(64) for w in (128, 256, 512, 1024)}
    sibling = await observe(matcher_stub, fingerprints(1100, **head, **fixed))
    assert (await observe(matcher_stub, fingerprints(1100, **head, **fixed))).observations == 2
    varied = [
        await observe(
            matcher_stub, fingerprints(1100, **head, **{f"w{w}": rng.getrandbits(64) for w in (128, 256, 512, 1024)})
        )
        for _ in range(4)
    ]
    assert not varied[-1].created and varied[-1].template_id == varied[0].template_id != sibling.template_id
    assert {sibling.template_id, varied[0].template_id} == {
        r["id"] for r in await pool.fetch("SELECT id FROM matcher_template")
    }
    again = await observe(matcher_stub, fingerprints(1100, **head, **fixed))
    assert again.template_id == sibling.template_id and again.observations == 3


async def test_a_prompt_closer_to_one_template_past_the_head_does_not_merge_them(matcher_stub, pool) -> None:
    rng = random.Random(15)
    head = dict(w16=0x1616, w32=0x3232, w64=0x6464)
    tail = [{f"w{w}": rng.getrandbits(64) for w in (128, 256, 512, 1024)} for _ in range(3)]
    first = await observe(matcher_stub, fingerprints(1100, **head, **tail[0]))
    second = await observe(matcher_stub, fingerprints(1100, **head, **tail[1]))
    # 8 bits from the first at 128 and 256 (beyond k, far below unrelated text): a slot past the head, then
    # text in common with the first
    near_first = dict(tail[2], w128=tail[0]["w128"] ^ 0xFF, w256=tail[0]["w256"] ^ 0xFF00)
    third = await observe(matcher_stub, fingerprints(1100, **head, **near_first))
    fourth = await observe(
        matcher_stub, fingerprints(1100, **head, **{f"w{w}": rng.getrandbits(64) for w in (128, 256, 512, 1024)})
    )
    assert third.created and fourth.created
    assert {first.template_id, second.template_id, third.template_id, fourth.template_id} == {
        r["id"] for r in await pool.fetch("SELECT id FROM matcher_template")
    }
