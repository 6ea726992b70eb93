"""The gateway counts a reload when Ollama loaded a runner, not when load_duration was long: at concurrency
1-8 its count equals the emulator's real loads (option changes, evictions), though queue waits make most
load_duration values long."""

from __future__ import annotations

import asyncio

import ollama
import pytest

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from proxy_plugin.runner_loads import RunnerLoads, Sent

from plugin_fixtures import StandInTuner, gateway_chain, stand_ins, wait_until

THRESHOLD_NS = 100_000_000
SMALL, LARGE = "llama3.1:8b", "qwen2.5:14b"


class ScheduleTuner(StandInTuner):
    """APPLY the num_ctx of the current phase (set by the test)."""

    num_ctx_now = 8192

    async def Recommend(self, request, context):
        self.num_ctx = self.num_ctx_now
        return await super().Recommend(request, context)


async def test_queue_wait_is_kept_option_change_idle_load_and_other_models_loads_are_loaded() -> None:
    loads = RunnerLoads()

    async def judged(ticket: Sent, load_ns: int) -> int:
        loads.finished(ticket)
        return await loads.judge(ticket, load_ns, THRESHOLD_NS)

    first = loads.sent("a", (8192, 512))
    queued = loads.sent("a", (8192, 512))  # behind the first: its load_duration is the wait
    changed = loads.sent("a", (16384, 512))  # two in flight: a reload all the same
    assert await judged(first, 4 * THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED
    assert await judged(queued, 9 * THRESHOLD_NS) == tuner_pb2.RUNNER_KEPT
    assert await judged(changed, 4 * THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED
    other = loads.sent("b", (4096, 512))
    busy = loads.sent("a", (16384, 512))
    behind = loads.sent("a", (16384, 512))
    assert await judged(other, 4 * THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED
    # "b" loaded after "a"'s previous request was sent: "a" may have been evicted
    assert await judged(busy, 4 * THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED
    assert await judged(behind, 4 * THRESHOLD_NS) == tuner_pb2.RUNNER_KEPT
    assert await judged(loads.sent("a", (16384, 512)), 0) == tuner_pb2.RUNNER_KEPT


@pytest.mark.parametrize("concurrency", [1, 4, 8])
async def test_gateway_counts_the_emulators_loads(concurrency: int) -> None:
    tuner = ScheduleTuner()
    async with stand_ins(tuner=tuner) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb", models=(SMALL, LARGE)) as (gw, _tap, emu):
            client = ollama.AsyncClient(host=gw.url)
            messages = [{"role": "user", "content": "Summarise the plot of a long novel in three sentences."}]
            # Phases: option changes of one model, then two models too large to co-reside evicting each other.
            for num_ctx, models in (
                (8192, (SMALL,)),
                (16384, (SMALL,)),
                (8192, (SMALL,)),
                (32768, (SMALL, LARGE)),
                (32768, (LARGE, SMALL)),
                (32768, (SMALL, LARGE)),
            ):
                tuner.num_ctx_now = num_ctx
                for model in models:
                    await asyncio.gather(*(client.chat(model=model, messages=messages) for _ in range(concurrency)))
            # A load's outcome is reported once /api/ps has been read, after the answer.
            await wait_until(lambda: len(tuner.outcomes) == 9 * concurrency)
            loaded = [o for o in tuner.outcomes if o.runner_load == tuner_pb2.RUNNER_LOADED]
            long_waits = [o for o in tuner.outcomes if o.load_duration_ns >= THRESHOLD_NS]
            assert sum(emu.loads.values()) >= 6
            assert len(loaded) == sum(emu.loads.values())
            if concurrency > 1:
                assert len(long_waits) > len(loaded), "queue waits made load_duration long"


async def test_ollamas_clock_tells_a_queue_wait_from_a_load() -> None:
    """Final chunks: created_at (end) and total_duration give the arrival; the earlier request's end is when
    the runner was free; load_duration beyond that wait is a load."""
    loads = RunnerLoads()
    first, queued, evicted = (loads.sent("a", (8192, 512)) for _ in range(3))
    loads.finished(first, 105.0, 5_000_000_000)  # arrived at 100.0, loaded 3.5 s
    loads.finished(queued, 106.0, 5_900_000_000)  # arrived at 100.1, waited 4.9 s for the first
    loads.finished(evicted, 110.5, 10_300_000_000)  # arrived at 100.2, evicted meanwhile
    assert await loads.judge(first, 3_500_000_000, THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED
    assert await loads.judge(queued, 4_905_000_000, THRESHOLD_NS) == tuner_pb2.RUNNER_KEPT
    # evicted: waited for the runner (106.0) and then 3.5 s more for a load
    assert await loads.judge(evicted, 9_300_000_000, THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED


async def test_a_request_judged_before_the_one_ahead_of_it_waited_for_it() -> None:
    """The gateway may read the answer of the second request before the first one's: the second's
    load_duration is still the wait behind the first, known once the first has ended."""
    loads = RunnerLoads()
    first = loads.sent("a", (8192, 512))
    second = loads.sent("a", (8192, 512))
    # second: arrived at 104.5, waited until the first ended at 105.0, ended at 107.0
    loads.finished(second, 107.0, 2_500_000_000)
    second_judged = asyncio.ensure_future(loads.judge(second, 505_000_000, THRESHOLD_NS))
    await asyncio.sleep(0)  # let the judgement start: it must wait for the first request
    assert not second_judged.done()
    # first: arrived at 100.0, loaded 3.5 s, ended at 105.0
    loads.finished(first, 105.0, 5_000_000_000)
    assert await loads.judge(first, 3_500_000_000, THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED
    assert await second_judged == tuner_pb2.RUNNER_KEPT


async def test_a_request_sent_first_but_served_second_waited_for_the_other() -> None:
    """Ollama may receive the requests in another order than the gateway sent them: the first-sent one
    waited behind the other, whose answer the gateway reads later."""
    loads = RunnerLoads()
    first = loads.sent("a", (8192, 512))
    second = loads.sent("a", (8192, 512))
    # first: arrived at 100.1, waited until the second ended at 105.0, ended at 107.0
    loads.finished(first, 107.0, 6_900_000_000)
    first_judged = asyncio.ensure_future(loads.judge(first, 4_905_000_000, THRESHOLD_NS))
    # second: arrived at 100.0, loaded 3.5 s, ended at 105.0
    loads.finished(second, 105.0, 5_000_000_000)
    assert await loads.judge(second, 3_500_000_000, THRESHOLD_NS) == tuner_pb2.RUNNER_LOADED
    assert await first_judged == tuner_pb2.RUNNER_KEPT


async def test_an_abandoned_request_does_not_hold_the_judgement() -> None:
    loads = RunnerLoads()
    cut, answered = loads.sent("a", (8192, 512)), loads.sent("a", (8192, 512))
    loads.finished(answered, 105.0, 5_000_000_000)
    judged = asyncio.ensure_future(loads.judge(answered, 3_500_000_000, THRESHOLD_NS))
    loads.finished(cut)  # the client went away: no answer, no clock
    assert await judged == tuner_pb2.RUNNER_LOADED
