"""What the optimizer changed against Ollama alone: one definition of a reload and of a truncation, the
benefit per outcome, `Summary`/`stats` per model and in total, the tuner's per-model metrics."""

from __future__ import annotations

import json
import re
from collections import Counter

import grpc
import prometheus_client
import pytest
from test_cli import cli

from ollama_optimizer.benefit import BenefitInput, Ledger, ReloadSettings, runner_loaded
from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from proxy_plugin.runner_loads import RunnerLoads
from tuner_service import benefit_view
from tuner_service.default_context import ASSUMED, LEARNED, OPERATOR, DefaultContext, default_context
from tuner_service.main import start_tuner
from tuner_service.policy import Observation, Policy
from tuner_service.settings import PolicySettings

from tuner_fixtures import fast_settings, local_server, make_outcome

MODEL = "llama3.1:8b"
KIB = 1024
LOADED, KEPT = tuner_pb2.RUNNER_LOADED, tuner_pb2.RUNNER_KEPT


def _request(**fields: object) -> BenefitInput:
    values: dict[str, object] = dict(
        optimized=False,
        sent=(0, 0),
        baseline=(0, 0),
        loaded=False,
        truncated=False,
        prompt_tokens=1000,
        default_ctx=4096,
    )
    values.update(fields)
    return BenefitInput(**values)  # type: ignore[arg-type]


def test_a_truncation_is_prevented_only_when_the_prompt_exceeds_what_ollama_would_have_used() -> None:
    ledger = Ledger()
    over = ledger.assess("m", "", _request(optimized=True, sent=(8192, 512), prompt_tokens=6000))
    assert over.truncation_prevented and over.baseline_ctx == 4096
    within = ledger.assess("m", "", _request(optimized=True, sent=(8192, 512), prompt_tokens=3000))
    assert not within.truncation_prevented and not within.baseline_truncated
    cut_anyway = ledger.assess("m", "", _request(optimized=True, sent=(8192, 512), prompt_tokens=6000, truncated=True))
    assert cut_anyway.baseline_truncated and not cut_anyway.truncation_prevented
    # The client's own num_ctx is what Ollama would have used: a prompt within it was never at risk.
    client_ctx = ledger.assess(
        "m", "", _request(optimized=True, sent=(8192, 512), baseline=(8192, 0), prompt_tokens=6000)
    )
    assert client_ctx.baseline_ctx == 8192 and not client_ctx.truncation_prevented
    passed = ledger.assess("m", "", _request(prompt_tokens=6000))
    assert passed.baseline_truncated and not passed.truncation_prevented


def test_a_load_is_the_optimizers_only_after_an_option_change_it_made() -> None:
    ledger = Ledger()
    first = ledger.assess("m", "", _request(loaded=True))
    assert first.cause == "other" and not first.baseline_reload  # a first load happens without the optimizer too
    switched = ledger.assess("m", "", _request(optimized=True, sent=(8192, 512), loaded=True))
    assert switched.cause == "optimizer" and not switched.baseline_reload
    evicted = ledger.assess("m", "", _request(optimized=True, sent=(8192, 512), loaded=True))
    assert evicted.cause == "other"
    client = ledger.assess("m", "", _request(sent=(2048, 0), baseline=(2048, 0), loaded=True))
    assert client.cause == "client" and client.baseline_reload  # the client's own option change
    back = ledger.assess("m", "", _request(optimized=True, sent=(8192, 512), loaded=True))
    assert back.cause == "optimizer" and back.baseline_reload  # bare after explicit: Ollama reloads to the default
    assert ledger.assess("other-model", "", _request(loaded=False)).cause == ""
    # Another model loaded on the same host in between: it may have evicted this one, the load is not blamed.
    ledger.assess("other-model", "", _request(loaded=True))
    assert ledger.assess("m", "", _request(optimized=True, sent=(16384, 512), loaded=True)).cause == "other"
    ledger.assess("model-b", "gpu-b", _request(loaded=True))  # another host's loads evict nothing here
    assert ledger.assess("m", "", _request(optimized=True, sent=(8192, 512), loaded=True)).cause == "optimizer"


async def test_one_reload_threshold_for_the_gateway_and_the_tuner() -> None:
    """A load of 0.3 s after an option change: the gateway's judgement and the tuner's own (without the
    gateway's, as behind the smart-proxy agent) agree; they used 0.1 s and 0.5 s."""
    threshold_s = ReloadSettings().reload_threshold_seconds
    threshold_ns = int(threshold_s * 1e9)
    loads = RunnerLoads()
    first = loads.sent("m", (4096, 512))
    loads.finished(first)
    await loads.judge(first, 0, threshold_ns)
    ticket = loads.sent("m", (8192, 512))
    loads.finished(ticket)
    assert await loads.judge(ticket, 300_000_000, threshold_ns) == LOADED

    policy = Policy(PolicySettings())
    observed = [
        policy.observe(
            Observation(MODEL, 1, 800, 2, True, ctx, 512, 0, 900, 50, 1.3, 0.3, 0.2, 0.8, "stop", True)
        ).reloaded
        for ctx in (4096, 8192)
    ]
    assert observed == [True, True]
    assert runner_loaded(tuner_pb2.RUNNER_LOAD_UNKNOWN, threshold_s / 2, True, 0.0, threshold_s) is False
    assert runner_loaded(KEPT, 30.0, True, 0.0, threshold_s) is False
    assert runner_loaded(LOADED, 0.0, False, 0.0, threshold_s) is True


@pytest.mark.parametrize(("baseline", "measured", "word"), [(14.0, 12.3, "1.7 s saved"), (10.0, 12.5, "2.5 s more")])
def test_stats_words_a_difference_by_its_sign(baseline: float, measured: float, word: str) -> None:
    b = tuner_pb2.Benefit(
        prompt_seconds=measured,
        prompt_seconds_baseline=baseline,
        prompt_estimated_requests=4,
        kv_bytes_default=512 * KIB * KIB,
        kv_bytes_loaded=2048 * KIB * KIB,
    )
    assert word in benefit_view.prompt_change(b) and "-" not in benefit_view.prompt_change(b).split("->")[1]
    assert benefit_view.kv_change(b) == "512.0 MiB -> 2.0 GiB (1.5 GiB more)"
    b.kv_bytes_loaded = 256 * KIB * KIB
    assert benefit_view.kv_change(b) == "512.0 MiB -> 256.0 MiB (256.0 MiB saved)"


def _decisions(model: str) -> Counter[tuple[str, str]]:
    """The tuner's decisions for ``model`` by (action, reason)."""
    (family,) = [m for m in prometheus_client.REGISTRY.collect() if m.name == "optimizer_tuner_recommendations"]
    return Counter(
        {
            (s.labels["action"], s.labels["reason"]): s.value
            for s in family.samples
            if s.name.endswith("_total") and s.labels["model"] == model
        }
    )


def _tuner_sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_summary_and_stats_measure_the_benefit_per_model(tuner, tuner_stub) -> None:
    """A model whose default context is 4096 (from /api/ps): passthroughs, a request the optimizer grows the
    context for, a queue wait, a client's own num_ctx. Every figure by the one definition."""
    series = [("optimizer_tuner_runner_loads_total", {"cause": cause}) for cause in ("optimizer", "client", "other")]
    series += [
        ("optimizer_tuner_truncations_total", {"kind": "prevented"}),
        ("optimizer_tuner_baseline_reloads_total", {}),
    ]
    before = [_tuner_sample(name, model=MODEL, **labels) for name, labels in series]
    bare = dict(loaded_context_length=4096, kv_bytes_per_token=128 * KIB)
    await tuner_stub.Report(
        tuner_pb2.ReportRequest(
            outcomes=[
                make_outcome(template_id=0, runner_load=LOADED, **bare),  # first load: would happen anyway
                make_outcome(template_id=0, runner_load=KEPT, **bare),
                make_outcome(template_id=0, runner_load=KEPT, **bare),
            ]
        )
    )
    decided = _decisions(MODEL)
    grown = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, prompt_units=4000))
    assert grown.action == tuner_pb2.APPLY and grown.num_ctx > 4096
    decided[("apply", grown.reason_code)] += 1
    assert _decisions(MODEL) == decided  # decisions by reason, per model
    applied = dict(action=tuner_pb2.APPLY, num_ctx=grown.num_ctx, num_batch=grown.num_batch, template_id=0)
    await tuner_stub.Report(
        tuner_pb2.ReportRequest(
            outcomes=[
                make_outcome(prompt_units=4000, prompt_eval_count=6000, runner_load=LOADED, **applied),  # prevented
                make_outcome(
                    prompt_eval_count=1000,
                    prompt_eval_duration_ns=200_000_000,
                    runner_load=KEPT,
                    load_duration_ns=9_000_000_000,
                    total_duration_ns=10_000_000_000,
                    latency_seconds=10.1,
                    **applied,
                ),  # a queue wait, no reload
                make_outcome(template_id=0, num_ctx=2048, client_num_ctx=2048, runner_load=LOADED),  # the client's
                make_outcome(
                    prompt_eval_count=1000, prompt_eval_duration_ns=200_000_000, runner_load=LOADED, **applied
                ),
            ]
        )
    )

    summary = await tuner_stub.Summary(tuner_pb2.SummaryRequest(period_seconds=600))
    (model,) = summary.models
    b = model.benefit
    assert (b.requests, b.optimized, b.truncations_prevented, b.truncated) == (7, 3, 1, 0)
    assert (b.runner_loads, b.loads_by_optimizer, b.loads_by_clients_baseline) == (4, 2, 2)
    assert model.reloads == 4  # not the 9 s queue wait
    assert (b.default_num_ctx, b.default_num_ctx_basis, b.loaded_num_ctx) == (4096, LEARNED, grown.num_ctx)
    assert (b.kv_bytes_default, b.kv_bytes_loaded) == (4096 * 128 * KIB, grown.num_ctx * 128 * KIB)
    # Prompt time: the two 1000-token optimized requests at the speed of the passthroughs (1100 tokens in 0.4 s).
    assert b.prompt_estimated_requests == 2 and b.prompt_seconds == pytest.approx(0.4)
    assert b.prompt_seconds_baseline == pytest.approx(2 * 1000 / (1100 / 0.4))
    assert summary.benefit.truncations_prevented == 1 and summary.benefit.kv_bytes_default == b.kv_bytes_default
    assert summary.kv_tokens_saved == 0 and summary.reloads_avoided == 0  # the retired figures

    after = [_tuner_sample(name, model=MODEL, **labels) for name, labels in series]
    assert [a - b for a, b in zip(after, before)] == [2, 1, 1, 1, 2]
    assert _tuner_sample("optimizer_tuner_kv_bytes", model=MODEL, ollama_host="", context="loaded") == b.kv_bytes_loaded

    code, out, err = await cli("stats", "--period", "600", "--address", tuner.address)
    assert code == 0, err
    figures = dict(re.findall(r"^ *(\S.*?\S)\s{2,}(.+)$", out.split("What the optimizer changed")[1], re.M))
    assert figures["truncations prevented"] == "1" and figures["truncated anyway"] == "0"
    assert (figures["reloads seen"], figures["by the optimizer"], figures["reloads the clients' options cause"]) == (
        "4",
        "2",
        "2",
    )
    assert figures["num_ctx default -> now"] == f"4096 -> {grown.num_ctx}"
    kv = figures["KV memory default -> now"]
    assert kv.startswith("512.0 MiB -> ") and kv.endswith("more)")
    assert "saved, 2 requests" in figures["prompt time baseline -> measured"]
    assert "truncations prevented: optimized requests" in out
    assert not re.search(r"-\d[\d.]* \S* ?saved", out)


def test_a_config_of_an_earlier_release_with_the_retired_thresholds_still_loads(tmp_path) -> None:
    """The gateway's own reload threshold and truncation ratio are gone (one definition for everything); a
    config.json that still sets them loads, and a misspelled key is still refused."""
    import json

    from proxy_plugin.config import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"reload_threshold_s": 0.3, "truncation_unit_ratio": 0.5, "max_model_labels": 7}))
    assert load_config(path, env={}).max_model_labels == 7
    path.write_text(json.dumps({"reload_treshold_s": 0.3}))
    with pytest.raises(ValueError, match="reload_treshold_s"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("version", "vram_gib", "training", "expected"),
    [
        ("0.5.12", 80, 0, 2048),
        ("0.6.7", 80, 0, 4096),
        ("0.15.4", 80, 0, 4096),
        ("0.15.5", 8, 0, 4096),
        ("0.15.5", 23, 0, 32768),
        ("0.30.11", 48, 0, 262144),
        ("0.30.11", 48, 131072, 131072),  # clamped to the training context
        ("", 24, 0, 32768),  # an unknown version is read as a current one
        ("", 0, 2048, 2048),  # no VRAM known: the small tier, clamped
    ],
)
def test_the_assumed_default_context_follows_ollamas_rule(
    version: str, vram_gib: int, training: int, expected: int
) -> None:
    assumed = default_context(0, 0, version, vram_gib << 30, training)
    assert (assumed.num_ctx, assumed.basis) == (expected, ASSUMED)
    assert default_context(0, 8192, version, vram_gib << 30, training).basis == OPERATOR
    assert default_context(16384, 8192, version, vram_gib << 30, training) == DefaultContext(16384, LEARNED)


async def test_a_default_never_seen_is_assumed_and_nothing_rests_on_it(tuner, tuner_stub) -> None:
    """Every request carried a num_ctx, so /api/ps never showed Ollama's default: the tuner assumes it by
    Ollama's rule (a 24 GB GPU: 32768) to decide, labels it "(assumed)", and claims nothing against it: the
    truncations prevented and the KV memory of the default are unknown ("—" in stats, null in --json, no
    metric), never a figure against the assumption (it claimed 1 prevented against 4096 here)."""
    before = _tuner_sample("optimizer_tuner_truncations_total", model=MODEL, kind="prevented")
    unknown_before = _tuner_sample("optimizer_tuner_baseline_unknown_total", model=MODEL)
    grown = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, prompt_units=4000))
    outcome = dict(
        template_id=0,
        prompt_units=4000,
        action=tuner_pb2.APPLY,
        num_ctx=grown.num_ctx,
        num_batch=grown.num_batch,
        kv_bytes_per_token=128 * KIB,
    )
    await tuner_stub.Report(
        tuner_pb2.ReportRequest(
            outcomes=[
                make_outcome(**outcome, prompt_eval_count=6000),  # no GPU figures: the small tier, 4096
                make_outcome(**outcome, prompt_eval_count=6000, gpu_memory_total_bytes=24 << 30),
            ]
        )
    )
    summary = await tuner_stub.Summary(tuner_pb2.SummaryRequest(period_seconds=600))
    b = summary.models[0].benefit
    assert (b.optimized, b.truncations_prevented, b.baseline_unknown_requests) == (2, 0, 2)
    assert (b.default_num_ctx, b.default_num_ctx_basis, b.kv_bytes_default) == (32768, ASSUMED, 0)
    assert b.kv_bytes_loaded == grown.num_ctx * 128 * KIB and summary.benefit.kv_bytes_default == 0
    assert _tuner_sample("optimizer_tuner_truncations_total", model=MODEL, kind="prevented") == before
    assert _tuner_sample("optimizer_tuner_baseline_unknown_total", model=MODEL) == unknown_before + 2
    kv_default = dict(model=MODEL, ollama_host="", context="default")
    assert prometheus_client.REGISTRY.get_sample_value("optimizer_tuner_kv_bytes", kv_default) is None
    code, out, err = await cli("stats", "--period", "600", "--address", tuner.address)
    assert code == 0, err
    figures = dict(re.findall(r"^ *(\S.*?\S)\s{2,}(.+)$", out.split("What the optimizer changed")[1], re.M))
    assert figures["truncations prevented"] == "—"
    assert figures["KV memory default -> now"] == f"— -> {benefit_view.size(b.kv_bytes_loaded)}"
    assert figures["num_ctx default -> now"] == f"32768 (assumed) -> {grown.num_ctx}"
    assert f"(assumed): Ollama's default context for {MODEL} by Ollama's rule" in out
    code, out, err = await cli("stats", "--period", "600", "--json", "--address", tuner.address)
    assert code == 0, err
    data = json.loads(out)
    (model,) = data["models"]
    assert model["benefit"]["default_num_ctx_basis"] == "assumed"
    assert model["benefit"]["truncations_prevented"] is None and model["benefit"]["kv_bytes_default"] is None
    assert data["benefit"]["truncations_prevented"] is None and data["truncations_prevented"] is None


async def test_a_learned_default_is_the_baseline_and_survives_a_restart(pool) -> None:
    """A request passed through without num_ctx showed Ollama's default in /api/ps (32768 on host gpu-a): the
    tuner keeps it (basis "learned", stored per model and host), so after a restart a 6000-token prompt is no
    truncation prevented and the KV memory of the default is a figure."""
    bare = dict(template_id=0, loaded_context_length=32768, kv_bytes_per_token=128 * KIB, ollama_host="gpu-a")
    first = await start_tuner(pool, local_server(), fast_settings())
    channel = create_channel(first.address)
    await tuner_pb2_grpc.TunerStub(channel).Report(tuner_pb2.ReportRequest(outcomes=[make_outcome(**bare)]))
    await channel.close()
    await first.stop(5)
    second = await start_tuner(pool, local_server(), fast_settings())
    channel = create_channel(second.address)
    stub = tuner_pb2_grpc.TunerStub(channel)
    try:
        applied = dict(bare, action=tuner_pb2.APPLY, num_ctx=8192, num_batch=512, loaded_context_length=0)
        await stub.Report(tuner_pb2.ReportRequest(outcomes=[make_outcome(prompt_eval_count=6000, **applied)]))
        summary = await stub.Summary(tuner_pb2.SummaryRequest(period_seconds=600))
    finally:
        await channel.close()
        await second.stop(0)
    (model,) = summary.models
    b = model.benefit
    assert (b.default_num_ctx, b.default_num_ctx_basis, model.ollama_host) == (32768, LEARNED, "gpu-a")
    assert (b.truncations_prevented, b.baseline_unknown_requests) == (0, 0)
    assert b.kv_bytes_default == 32768 * 128 * KIB
    assert benefit_view.prevented(b) == "0"


def test_stats_shows_a_count_against_known_baselines_as_a_lower_bound() -> None:
    assert benefit_view.prevented(tuner_pb2.Benefit(truncations_prevented=3)) == "3"
    assert benefit_view.prevented(tuner_pb2.Benefit(truncations_prevented=3, baseline_unknown_requests=2)) == ">= 3"
    assert benefit_view.prevented(tuner_pb2.Benefit(baseline_unknown_requests=2)) == "—"


@pytest.mark.parametrize(
    ("basis", "shown"),
    [(LEARNED, "8192 -> 16384"), (OPERATOR, "8192 (operator) -> 16384"), (ASSUMED, "8192 (assumed) -> 16384")],
)
def test_stats_labels_a_default_not_learned_from_ollama(basis: str, shown: str) -> None:
    b = tuner_pb2.Benefit(default_num_ctx=8192, default_num_ctx_basis=basis, loaded_num_ctx=16384)
    assert benefit_view.context_change(b) == shown


async def test_a_default_the_gateway_saw_spares_the_cold_start_its_guard_reload(tuner_stub) -> None:
    """Issue 21's cold start: requests are decided before any outcome arrives. With the default assumed
    (4096), a first 4000-unit prompt makes the truncation guard reload the runner Ollama loaded at its real
    default (32768); with the default the gateway saw in /api/ps it passes through: no reload."""
    assumed = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=MODEL, prompt_units=4000))
    assert (assumed.action, assumed.reason_code) == (tuner_pb2.APPLY, "grow_truncation_guard")
    other = "qwen2.5:14b"
    seen = await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=other, prompt_units=4000, default_num_ctx=32768))
    assert (seen.action, seen.reason_code, seen.num_ctx) == (tuner_pb2.PASSTHROUGH, "no_data", 32768)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await tuner_stub.Recommend(tuner_pb2.RecommendRequest(model=other, default_num_ctx=1 << 30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
