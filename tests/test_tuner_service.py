"""Tuner over real gRPC and Postgres: recommend, report validation, idempotency, admin RPCs, persistence."""

from __future__ import annotations

import math

import asyncpg
import grpc
import pytest

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from tuner_service.main import start_tuner

from tuner_fixtures import fast_settings, local_server, make_outcome

MODEL = "llama3.1:8b"


async def test_passthrough_without_data(tuner_stub) -> None:
    response = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=7, prompt_units=500))
    assert response.action == tuner_pb2.PASSTHROUGH
    assert response.reason_code == "no_data"
    assert response.decision_id


async def test_guard_applies_to_an_oversize_prompt_without_history(tuner_stub) -> None:
    response = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, prompt_units=20_000))
    assert response.action == tuner_pb2.APPLY
    assert response.reason_code == "grow_truncation_guard"
    assert response.num_ctx >= response.estimated_need


async def test_report_rejects_bad_items_and_keeps_the_rest(tuner, tuner_stub) -> None:
    batch = [
        make_outcome(),
        make_outcome(prompt_eval_count=-1),
        make_outcome(latency_seconds=math.nan),
        make_outcome(prompt_eval_count=20_000_000),
        make_outcome(total_duration_ns=90_000 * 10**9),
        make_outcome(load_duration_ns=3_000_000_000),  # longer than total_duration
        make_outcome(action=7),
        make_outcome(),
        make_outcome(model_size_bytes=-1),
        make_outcome(model_size_bytes=1000, model_vram_bytes=-1),
        make_outcome(model_size_bytes=1000, model_vram_bytes=2000),  # more in VRAM than the model's size
    ]
    response = await tuner_stub.Report(tuner_pb2.ReportRequest(outcomes=batch))
    assert response.accepted == 2
    assert sorted(r.index for r in response.rejected) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert all(r.reason for r in response.rejected)
    assert tuner.core.policy.models[MODEL].templates[1].observations == 2


async def test_duplicates_are_ignored_and_stored_once(tuner, tuner_stub, pool: asyncpg.Pool) -> None:
    # /api/ps figures of a partial offload (size_vram < size): stored so spills can be queried afterwards.
    first = make_outcome(
        outcome_id="same",
        model_size_bytes=9_000_000_000,
        model_vram_bytes=7_000_000_000,
        host_rss_bytes=123_456,
        gpu_memory_used_bytes=7_500_000_000,
        gpu_memory_total_bytes=8_000_000_000,
        loaded_context_length=4096,
    )
    response = await tuner_stub.Report(tuner_pb2.ReportRequest(outcomes=[first, first]))
    assert (response.accepted, response.duplicates) == (1, 1)
    again = await tuner_stub.Report(tuner_pb2.ReportRequest(outcomes=[first]))
    assert (again.accepted, again.duplicates) == (0, 1)
    await tuner.core.writer.wait_drained()
    assert await pool.fetchval("SELECT count(*) FROM tuner_outcome WHERE outcome_id = 'same'") == 1
    row = await pool.fetchrow(
        """SELECT model_size_bytes, model_vram_bytes, host_rss_bytes, gpu_memory_used_bytes,
                  gpu_memory_total_bytes, loaded_context_length FROM tuner_outcome WHERE outcome_id = 'same'"""
    )
    assert tuple(row) == (9_000_000_000, 7_000_000_000, 123_456, 7_500_000_000, 8_000_000_000, 4096)
    spilled = await pool.fetchval(
        "SELECT count(*) FROM tuner_outcome WHERE model_vram_bytes > 0 AND model_vram_bytes < model_size_bytes"
    )
    assert spilled == 1
    assert tuner.core.policy.models[MODEL].templates[1].observations == 1


async def test_oversize_report_batch_is_invalid(tuner_stub) -> None:
    outcomes = [make_outcome() for _ in range(10_001)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tuner_stub.Report(tuner_pb2.ReportRequest(outcomes=outcomes))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_recommend_validates_model(tuner_stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _learn(stub, template_id: int, count: int, units: int = 3000) -> None:
    await stub.Report(
        tuner_pb2.ReportRequest(
            outcomes=[
                make_outcome(template_id=template_id, prompt_units=units, prompt_eval_count=units + 50, eval_count=300)
                for _ in range(count)
            ]
        )
    )


async def test_learned_template_is_applied_explained_pinned_and_reset(tuner_stub) -> None:
    await _learn(tuner_stub, 5, 5)
    response = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=5, prompt_units=3000))
    assert response.action == tuner_pb2.APPLY
    assert response.num_ctx == 4096
    explained = await tuner_stub.Explain(tuner_pb2.ExplainRequest(model=MODEL, template_id=5))
    assert explained.known and explained.observations == 5 and explained.loaded_num_ctx == 4096
    assert "template" in explained.reason
    pinned = await tuner_stub.Pin(tuner_pb2.PinRequest(model=MODEL, template_id=5, num_ctx=8192, num_batch=1024))
    assert pinned.state.pinned and pinned.state.current_num_ctx == 8192
    response = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=5, prompt_units=3000))
    assert (response.num_ctx, response.num_batch, response.reason_code) == (8192, 1024, "pinned")
    assert (await tuner_stub.Reset(tuner_pb2.ResetRequest(model=MODEL, template_id=5))).existed
    for call, request in (("Reset", tuner_pb2.ResetRequest), ("Explain", tuner_pb2.ExplainRequest)):
        with pytest.raises(grpc.aio.AioRpcError) as gone:  # forgotten: it no longer exists
            await getattr(tuner_stub, call)(request(model=MODEL, template_id=5))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_summary_counts_requests(tuner_stub) -> None:
    await _learn(tuner_stub, 3, 4)
    decision = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=3, prompt_units=3000))
    await tuner_stub.Report(
        tuner_pb2.ReportRequest(
            outcomes=[
                make_outcome(
                    template_id=3,
                    prompt_units=3000,
                    prompt_eval_count=3050,
                    action=tuner_pb2.APPLY,
                    num_ctx=decision.num_ctx,
                    decision_id=decision.decision_id,
                )
            ]
        )
    )
    summary = await tuner_stub.Summary(tuner_pb2.SummaryRequest(period_seconds=600))
    assert summary.requests == 5 and summary.optimized == 1
    assert summary.match_rate == 1.0
    assert summary.models[0].model == MODEL and summary.models[0].loaded_num_ctx == decision.num_ctx


async def test_state_survives_a_restart(pool: asyncpg.Pool) -> None:
    first = await start_tuner(pool, local_server(), fast_settings())
    first.core.report([make_outcome(template_id=9, prompt_units=3000, prompt_eval_count=3050) for _ in range(4)])
    first.core.pin(MODEL, 10, 16384, 0)
    await first.stop(0)
    second = await start_tuner(pool, local_server(), fast_settings())
    try:
        model = second.core.policy.models[MODEL]
        assert 9 not in model.templates  # loaded on demand
        await second.core.residency.ensure(MODEL, 9)
        assert model.templates[9].observations == 4
        assert model.templates[10].pinned and model.templates[10].pin_ctx == 16384
        assert model.calibration_samples == 4
        duplicate = second.core.report([make_outcome(outcome_id="o-dup-check")])
        assert len(duplicate.kept) == 1
    finally:
        await second.stop(0)


async def test_a_model_is_stored_only_once_an_outcome_confirms_it(tuner, tuner_stub, pool: asyncpg.Pool) -> None:
    """A Recommend for a name Ollama may not know (the gateway asks before Ollama answers 404) leaves no
    row; the first outcome stores the model with the options the tuner believes it loaded."""
    ghost = "no-such-model:1b"
    applied = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=ghost, prompt_units=20_000))
    assert applied.action == tuner_pb2.APPLY and tuner.core.policy.models[ghost].loaded_ctx == applied.num_ctx
    await tuner.core.writer.flush()
    assert await pool.fetchval("SELECT count(*) FROM tuner_model WHERE model = $1", ghost) == 0

    tuner.core.report(
        [
            make_outcome(
                model=ghost, template_id=0, num_ctx=applied.num_ctx, prompt_units=20_000, prompt_eval_count=21_000
            )
        ]
    )
    await tuner.core.writer.flush()
    stored = await pool.fetchval("SELECT loaded_num_ctx FROM tuner_model WHERE model = $1", ghost)
    assert stored == applied.num_ctx


async def test_stats_and_explain_say_when_the_traffic_needs_more_context_than_fits(tuner_stub) -> None:
    """/api/ps sizes at two contexts give the KV bytes per token; a spilled load gives the VRAM the model gets."""
    gib = 1 << 30
    await tuner_stub.Report(
        tuner_pb2.ReportRequest(
            outcomes=[
                make_outcome(
                    template_id=4, loaded_context_length=4096, model_size_bytes=6 * gib, model_vram_bytes=6 * gib
                ),
                make_outcome(
                    template_id=4,
                    loaded_context_length=32768,
                    model_size_bytes=int(9.5 * gib),
                    model_vram_bytes=7 * gib,
                ),
            ]
        )
    )
    summary = await tuner_stub.Summary(tuner_pb2.SummaryRequest(period_seconds=600))
    advice = summary.models[0].memory_advice
    assert "traffic needs 32768 tokens of context" in advice and "OLLAMA_KV_CACHE_TYPE=q8_0" in advice
    explained = await tuner_stub.Explain(tuner_pb2.ExplainRequest(model=MODEL, template_id=4))
    assert "KiB per context token" in explained.reason and "OLLAMA_FLASH_ATTENTION=1" in explained.reason
