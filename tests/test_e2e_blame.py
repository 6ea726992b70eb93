"""The benchmark's split of a request's time (bench/e2e_blame.py) on the real emulator engine: a cold load,
a wait behind another request, and a reload for changed options are told apart."""

from __future__ import annotations

import pytest

from bench.e2e_blame import intact_time, load_intervals, split
from bench.ollama_sim import Emulator, EmulatorConfig

MESSAGES = [{"role": "user", "content": "say something about the weather in a few words " * 20}]


def test_load_wait_queue_wait_and_service_are_told_apart() -> None:
    emulator = Emulator(EmulatorConfig(hardware="gpu-8gb", models=("llama3.1:8b",), default_num_ctx=4096))
    engine = emulator.engine
    engine.now = lambda: 0.0  # type: ignore[method-assign]  # three requests arrive together
    first = engine.schedule("chat", "llama3.1:8b", MESSAGES, {}, None, None, None).record
    second = engine.schedule("chat", "llama3.1:8b", MESSAGES, {}, None, None, None).record
    third = engine.schedule("chat", "llama3.1:8b", MESSAGES, {"num_ctx": 8192}, None, None, None).record
    loads = load_intervals(emulator)
    assert first.loaded and not second.loaded and third.reloaded and len(loads) == 2

    cold, queued, reloaded = (split(r, loads) for r in (first, second, third))
    for record, part in ((first, cold), (second, queued), (third, reloaded)):
        assert part.service_s == pytest.approx(record.prompt_eval_s + record.eval_s)
        assert part.service_s + part.load_wait_s + part.queue_wait_s == pytest.approx(record.total_s)
    assert cold.load_wait_s == pytest.approx(loads[0][1] - loads[0][0]) and cold.queue_wait_s < 0.01
    assert queued.load_wait_s == pytest.approx(cold.load_wait_s)  # arrived during the load, then waited for the first
    assert queued.queue_wait_s >= first.prompt_eval_s + first.eval_s
    assert reloaded.load_wait_s == pytest.approx(cold.load_wait_s + loads[1][1] - loads[1][0])
    assert reloaded.queue_wait_s >= queued.queue_wait_s

    means = intact_time([first, None, third], loads, [True, True, False])
    assert means == {
        "service_s": round(cold.service_s, 3),
        "load_wait_s": round(cold.load_wait_s, 3),
        "queue_wait_s": round(cold.queue_wait_s, 3),
    }
