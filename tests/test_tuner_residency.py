"""Templates in memory are bounded: start-up loads no unpinned template, evicted ones come back on demand."""

from __future__ import annotations

import dataclasses

import asyncpg

from tuner_service.main import start_tuner
from tuner_service.policy import Demand

from plugin_fixtures import wait_until
from tuner_fixtures import fast_settings, local_server, make_outcome

MODEL = "llama3.1:8b"


async def test_restart_loads_pinned_templates_only_and_fetches_others_on_demand(pool: asyncpg.Pool) -> None:
    first = await start_tuner(pool, local_server(), fast_settings())
    try:
        first.core.pin(MODEL, 9, 8192, 256)
        result = first.core.report(
            [make_outcome(MODEL, template_id=t, prompt_units=1000 * t) for t in (1, 2, 3) for _ in range(3)]
        )
        await first.core.writer.wait_stored(result.all_stored, 10.0)
        assert result.all_stored()
    finally:
        await first.stop(0)
    second = await start_tuner(pool, local_server(), fast_settings())
    try:
        model = second.core.policy.models[MODEL]
        assert set(model.templates) == {9} and model.templates[9].pinned
        second.core.recommend(Demand(MODEL, 2, 2000))
        await wait_until(lambda: 2 in model.templates)
        assert model.templates[2].observations == 3
        second.core.recommend(Demand(MODEL, 77, 2000))  # nothing stored: remembered as missing, fetched once
        await wait_until(lambda: (MODEL, 77) in second.core.residency._missing)
    finally:
        await second.stop(0)


async def test_least_recently_used_templates_leave_memory_beyond_the_bound(pool: asyncpg.Pool) -> None:
    settings = dataclasses.replace(fast_settings(), templates_in_memory=5)
    running = await start_tuner(pool, local_server(), settings)
    try:
        core = running.core
        core.pin(MODEL, 100, 4096, 0)
        for t in range(1, 13):
            result = core.report([make_outcome(MODEL, template_id=t)])
            await core.writer.wait_stored(result.all_stored, 10.0)
            assert result.all_stored()  # written: evictable
            core.recommend(Demand(MODEL, 1, 1000))  # template 1 stays the most recently used
        model = core.policy.models[MODEL]
        assert len(model.templates) <= 5
        assert {1, 12, 100} <= set(model.templates)
        assert 2 not in model.templates
        core.recommend(Demand(MODEL, 2, 1000))
        await wait_until(lambda: 2 in model.templates)
        assert model.templates[2].observations == 1
    finally:
        await running.stop(0)
