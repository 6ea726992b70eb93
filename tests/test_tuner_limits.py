"""Hard limits and caps (trained context, operator maxima, KV budget, memory) and operator controls that cannot
hurt (validated pins, resets that exist, NOT_FOUND for names that do not), on a real tuner over gRPC."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from ollama_optimizer.channels import create_channel
from ollama_optimizer.cli import main as cli_main
from ollama_optimizer.cli_support import CliError
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from tuner_service import admin_cli
from tuner_service.limits import LimitSettings, clamp
from tuner_service.main import RunningTuner, start_tuner
from tuner_service.state import ModelState, ladder

from tuner_fixtures import fast_settings, local_server, make_outcome

MODEL = "llama3.1:8b"
GiB = 2**30


async def _learn(
    stub: tuner_pb2_grpc.TunerStub, template_id: int, units: int, count: int = 4, model: str = MODEL, **fields: object
) -> None:
    await stub.Report(
        tuner_pb2.ReportRequest(
            outcomes=[
                make_outcome(
                    model=model,
                    template_id=template_id,
                    prompt_units=units,
                    prompt_eval_count=units + 50,
                    eval_count=300,
                    **fields,
                )
                for _ in range(count)
            ]
        )
    )


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture
async def capped(pool: asyncpg.Pool) -> AsyncIterator[tuple[RunningTuner, tuner_pb2_grpc.TunerStub]]:
    limits = LimitSettings(
        max_num_ctx=65536,
        model_max_num_ctx={"qwen2.5:14b": 8192},
        kv_budget_bytes=0,
        model_kv_budget_bytes={"llama3.2:3b": 1 * GiB},
    )
    running = await start_tuner(pool, local_server(), dataclasses.replace(fast_settings(), limits=limits))
    channel = create_channel(running.address)
    yield running, tuner_pb2_grpc.TunerStub(channel)
    await channel.close()
    await running.stop(0)


async def test_trained_context_is_never_exceeded_and_explained(tuner_stub) -> None:
    await _learn(tuner_stub, 1, 20_000, model_context_limit=8192)
    reply = await tuner_stub.Recommend(
        tuner_pb2.RecommendRequest(model=MODEL, template_id=1, prompt_units=20_000, model_context_limit=8192)
    )
    assert reply.action == tuner_pb2.APPLY and reply.num_ctx == 8192
    assert "may be truncated" in reply.reason and "trained context 8192" in reply.reason
    state = await tuner_stub.Explain(tuner_pb2.ExplainRequest(model=MODEL, template_id=1))
    assert (state.model_context_limit, state.num_ctx_cap) == (8192, 8192)
    assert "model context limit: 8192" in state.reason


async def test_a_new_model_is_capped_by_its_trained_context_on_the_first_request(tuner_stub) -> None:
    reply = await tuner_stub.Recommend(
        tuner_pb2.RecommendRequest(model="fresh:1b", prompt_units=40_000, model_context_limit=4096)
    )
    assert reply.num_ctx <= 4096


async def test_operator_caps_and_kv_budget(capped) -> None:
    running, stub = capped
    before = REGISTRY.get_sample_value("optimizer_tuner_capped_total") or 0.0
    for model in ("qwen2.5:14b", "llama3.2:3b", MODEL):
        await _learn(stub, 2, 60_000, model=model, kv_bytes_per_token=114_688)
    caps = {}
    for model in ("qwen2.5:14b", "llama3.2:3b", MODEL):
        reply = await stub.Recommend(
            tuner_pb2.RecommendRequest(model=model, template_id=2, prompt_units=60_000, kv_bytes_per_token=114_688)
        )
        caps[model] = reply.num_ctx
    assert caps == {"qwen2.5:14b": 8192, "llama3.2:3b": GiB // 114_688, MODEL: 65536}
    assert (REGISTRY.get_sample_value("optimizer_tuner_capped_total") or 0.0) >= before
    state = await stub.Explain(tuner_pb2.ExplainRequest(model="llama3.2:3b", template_id=2))
    assert state.num_ctx_cap == GiB // 114_688 and "KV budget" in state.reason
    assert running.core.policy.models["qwen2.5:14b"].loaded_ctx == 8192  # the believed state follows the cap


def test_memory_cap_never_goes_below_the_need() -> None:
    model = ModelState(gpu_total=8 * GiB, size_bytes=6 * GiB, kv_bytes_per_token=131_072, loaded_ctx=4096)
    rungs = ladder(1024, 262144, 131072, 4)
    value, why = clamp(MODEL, model, 32768, 5000, rungs, LimitSettings())
    assert value < 32768 and value >= 5000 and "memory cap" in why
    value, why = clamp(MODEL, model, 32768, 24_000, rungs, LimitSettings())
    assert 24_000 <= value < 32768  # the cap allows ~14k tokens, the need wins
    assert clamp(MODEL, ModelState(), 32768, 5000, rungs, LimitSettings()) == (32768, "")  # no GPU figures
    spilled = ModelState(size_bytes=9 * GiB, vram_bytes=8 * GiB, kv_bytes_per_token=131_072, loaded_ctx=16384)
    value, why = clamp(MODEL, spilled, 16384, 3000, rungs, LimitSettings())  # /api/ps size_vram, no probes
    assert value == 8192 and "before the spill" in why  # 1 GiB of VRAM beside the weights: 8192 tokens


def test_the_memory_cap_never_forces_a_load_and_keeps_the_margin_of_a_load() -> None:
    """The memory cap bounds what a load picks. A decision that keeps the loaded context (a long session's
    context the rent-or-buy rule has not left yet) is not lowered: that would be a reload the policy did not
    choose, around its hysteresis. A load for a need beyond the cap keeps the policy's margin, else the
    session's next turn grows again (57344 -> 65536 -> 57344)."""
    weights = int(4.9 * GiB)
    model = ModelState(gpu_total=8 * GiB, size_bytes=weights + 131_072 * 65536, kv_bytes_per_token=131_072)
    model.loaded_ctx = 65536
    rungs = ladder(1024, 262144, 131072, 4)
    assert clamp(MODEL, model, 65536, 2000, rungs, LimitSettings(), 1.15, load=False) == (65536, "")
    value, why = clamp(MODEL, model, 65536, 2000, rungs, LimitSettings(), 1.15, load=True)
    assert value == 16384 and "memory cap" in why  # a load still fits the GPU
    value, _ = clamp(MODEL, model, 65536, 54_000, rungs, LimitSettings(), 1.15, load=True)
    assert value == 65536  # 54,000 x 1.15 = 62,100 tokens: the rung above 57344


async def test_pin_is_validated_and_a_misspelled_model_never_stored(tuner, tuner_stub) -> None:
    await _learn(tuner_stub, 3, 3000)
    bad = {
        "misspelled model": (
            tuner_pb2.PinRequest(model="llama3.1:8bb", template_id=3, num_ctx=8192),
            grpc.StatusCode.NOT_FOUND,
        ),
        "unknown template": (
            tuner_pb2.PinRequest(model=MODEL, template_id=77, num_ctx=8192),
            grpc.StatusCode.NOT_FOUND,
        ),
        "above the limit": (
            tuner_pb2.PinRequest(model=MODEL, template_id=3, num_ctx=10_000_000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "not a rung": (tuner_pb2.PinRequest(model=MODEL, template_id=3, num_ctx=100), grpc.StatusCode.INVALID_ARGUMENT),
        "odd batch": (
            tuner_pb2.PinRequest(model=MODEL, template_id=3, num_batch=333),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    }
    for what, (request, expected) in bad.items():
        code, details = await _code(tuner_stub.Pin(request))
        assert code == expected and len(details) > 10, what
    assert "llama3.1:8bb" not in tuner.core.policy.models
    assert not tuner.core.policy.models[MODEL].templates[3].pinned
    ok = await tuner_stub.Pin(tuner_pb2.PinRequest(model=MODEL, template_id=3, num_ctx=8192, num_batch=1024))
    assert ok.state.pinned and ok.state.current_num_ctx == 8192


async def test_reset_of_the_big_template_returns_the_model_context(tuner_stub) -> None:
    await _learn(tuner_stub, 4, 1000)
    await _learn(tuner_stub, 5, 30_000)
    big = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=5, prompt_units=30_000))
    small = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=4, prompt_units=1000))
    assert small.num_ctx == big.num_ctx >= 32768  # one loaded context serves both
    assert (await tuner_stub.Reset(tuner_pb2.ResetRequest(model=MODEL, template_id=5))).existed
    after = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=4, prompt_units=1000))
    assert after.num_ctx < 8192 and after.reason_code == "reset" and "reset" in after.reason


async def test_whole_model_reset_returns_it_to_ollama_defaults(tuner, tuner_stub, pool) -> None:
    await _learn(tuner_stub, 6, 3000)
    assert (
        await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=6, prompt_units=3000))
    ).action == tuner_pb2.APPLY
    await tuner.core.writer.flush()
    assert await pool.fetchval("SELECT count(*) FROM tuner_rule WHERE model = $1", MODEL)
    code, _ = await _code(tuner_stub.Reset(tuner_pb2.ResetRequest(model=MODEL)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # no template and no whole_model: refused, nothing lost
    assert (await tuner_stub.Reset(tuner_pb2.ResetRequest(model=MODEL, whole_model=True))).existed
    after = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, template_id=6, prompt_units=300))
    assert after.action == tuner_pb2.PASSTHROUGH
    await asyncio.wait_for(tuner.core.writer.wait_drained(), 60)  # the background flush holding the delete
    for table in ("tuner_rule", "tuner_model", "tuner_arm"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE model = $1", MODEL) == 0, table
    code, _ = await _code(tuner_stub.Explain(tuner_pb2.ExplainRequest(model=MODEL, template_id=6)))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_cli_on_names_that_do_not_exist_exits_nonzero_with_one_line(tuner, tuner_stub, capsys) -> None:
    await _learn(tuner_stub, 7, 3000)
    cases = [
        (admin_cli.explain, {"model": "nope:1b", "template_id": 7}),
        (admin_cli.explain, {"model": MODEL, "template_id": 999}),
        (admin_cli.reset, {"model": MODEL, "template_id": 999}),
        (admin_cli.reset, {"model": "nope:1b", "template_id": 0}),
        (admin_cli.stats, {"model": "nope:1b", "period": 60}),
    ]
    for command, fields in cases:  # the CLI prints a CliError as one line and exits 1 (tests/test_cli.py)
        with pytest.raises(CliError, match="NOT_FOUND") as error:
            await command(argparse.Namespace(address=tuner.address, json=False, host="", **fields))
        assert "\n" not in str(error.value), fields
        assert capsys.readouterr().out == "", fields


def test_cli_bad_environment_is_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPTIMIZER_CLIENT_TLS_CA", "/nonexistent/ca.pem")
    with pytest.raises(SystemExit) as exited:
        cli_main(["stats", "--address", "127.0.0.1:1"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "/nonexistent/ca.pem" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["stats", "--period", "-5"],
        ["templates", "--limit", "-1"],
        ["pin", MODEL, "3", "--num-ctx", "-5"],
        ["pin", MODEL, "3", "--num-ctx", "1e9"],
        ["explain", MODEL, "-2"],
        ["pin", MODEL, "3", "--num-batch", str(2**40)],
    ],
)
def test_cli_argument_errors_never_trace(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err
