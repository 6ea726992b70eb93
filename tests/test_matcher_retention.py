"""Retention at scale: templates unseen for the forget period go whatever their count, and a retention run
in progress never holds up Match."""

from __future__ import annotations

import datetime

from matcher_service import store
from matcher_service.maintenance import Maintenance
from matcher_service.settings import MatcherSettings
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2 as pb

from matcher_fixtures import prompt


async def _learn(stub, text: str, times: int) -> int:
    template_id = 0
    for i in range(times):
        fps = (await stub.Match(pb.MatchRequest(model="m", text=f"{text} e{i}x"))).fingerprints
        template_id = (await stub.Observe(pb.ObserveRequest(model="m", fingerprints=fps))).template_id
    return template_id


async def _age(pool, template_id: int, days: int) -> None:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    await pool.execute("UPDATE matcher_template SET last_seen_at = $2 WHERE id = $1", template_id, when)


async def test_templates_unseen_for_the_forget_period_are_deleted_whatever_their_count(pool, matcher_stub) -> None:
    forgotten = await _learn(matcher_stub, prompt(81, 300), 5)
    kept = await _learn(matcher_stub, prompt(82, 300), 5)
    await _age(pool, forgotten, 100)
    await _age(pool, kept, 30)
    settings = MatcherSettings(retention_max_idle=7 * 86400, retention_forget=90 * 86400)
    assert await Maintenance(pool, settings).run_once() == 1
    assert [r["id"] for r in await pool.fetch("SELECT id FROM matcher_template")] == [kept]


async def test_match_answers_while_a_retention_run_holds_its_deletions(pool, matcher_stub) -> None:
    text = prompt(83, 400)
    template_id = await _learn(matcher_stub, text, 1)
    await _age(pool, template_id, 30)
    settings = MatcherSettings()
    async with pool.acquire() as conn, conn.transaction():  # a retention batch, not committed yet
        status = await conn.execute(
            store.RETENTION_SQL,
            settings.retention_min_observations,
            settings.retention_max_idle,
            10_000,
            0,
            settings.retention_forget,
        )
        assert status == "DELETE 1"
        answer = await matcher_stub.Match(pb.MatchRequest(model="m", text=text))  # not waiting for the delete
        assert answer.matched and not answer.cache_hit and answer.template_id == template_id
    assert await pool.fetchval("SELECT count(*) FROM matcher_template") == 0
