"""Policy and memory: the finer ladder, explicit safe num_batch, spills to the CPU, co-residence of models."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tuner_service.explain import explain
from tuner_service.policy import APPLY, Advice, Demand, Policy
from tuner_service.settings import PolicySettings
from tuner_service.state import ModelState, ladder, rung_for

from tuner_fixtures import served

GIB = 1 << 30
RATIO = 1.1


def make_policy(**overrides: object) -> Policy:
    return Policy(dataclasses.replace(PolicySettings(), **overrides))


@dataclasses.dataclass(frozen=True)
class Weights:
    """A model's memory: weights + KV bytes per context token + compute buffer bytes per batch token."""

    weights: int
    kv_per_token: int
    buffer_per_batch: int = 1536 * 1024


class Gpu:
    """A stand-in Ollama on one GPU: a runner per model, reload on option change, LRU eviction when the
    runners do not fit together, partial offload (size_vram < size) when one alone does not fit."""

    def __init__(self, policy: Policy, vram: int, models: dict[str, Weights], default_ctx: int = 4096) -> None:
        self.policy, self.vram, self.models, self.default_ctx = policy, vram, models, default_ctx
        self.runners: dict[str, tuple[tuple[int, int], int]] = {}  # model -> (options, size); dict order = LRU
        self.loads = 0
        self.truncations = 0

    def size(self, model: str, ctx: int, batch: int) -> int:
        w = self.models[model]
        return w.weights + w.kv_per_token * ctx + w.buffer_per_batch * batch

    def run(self, model: str, template_id: int, units: int, output: int = 200) -> Advice:
        demand = Demand(model, template_id, units, frozenset(), 0, 2)
        decision = self.policy.recommend(demand)
        options = (decision.num_ctx, decision.num_batch) if decision.action == APPLY else (0, 0)
        ctx, batch = options[0] or self.default_ctx, options[1] or 512
        loaded = self.runners.pop(model, None)
        load = loaded is None or loaded[0] != options
        size = self.size(model, ctx, batch) if load else loaded[1]
        while load and self.runners and sum(s for _, s in self.runners.values()) + size > self.vram:
            self.runners.pop(next(iter(self.runners)))
        self.runners[model] = (options, size)
        self.loads += load
        vram = min(size, self.vram - sum(s for m, (_, s) in self.runners.items() if m != model))
        prompt = math.ceil(units * RATIO) + 24
        truncated = prompt > ctx
        self.truncations += truncated
        self.policy.observe(
            served(
                demand,
                decision,
                ctx // 2 + 2 if truncated else prompt,
                output,
                total_s=8.0 if load else 2.0,
                load_s=6.0 if load else 0.01,
                loaded_context_length=ctx,
                model_size=size,
                model_vram=vram,
            )
        )
        return decision


# ---- (a) the finer ladder -----------------------------------------------------------------------
def test_ladder_overshoot_at_most_a_quarter_and_capped() -> None:
    rungs = ladder(1024, 262144, 0, 4)
    assert rungs[:6] == [1024, 1280, 1536, 1792, 2048, 2560] and rungs[-1] == 262144
    assert all(b / a <= 1.25 for a, b in itertools.pairwise(rungs))
    assert rung_for(8400, rungs) == 10240 and rung_for(44_700, rungs) == 49152
    assert ladder(1024, 262144, 40000, 4)[-1] == 40000
    assert ladder(1024, 262144, 0, 1) == [1024 << i for i in range(9)]
    assert ladder(1024, 65536, 0, 4, (3000, 9000, 100_000)) == [3000, 9000, 65536]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200_000))
def test_default_ladder_covers_with_at_most_25_percent_overshoot(tokens: int) -> None:
    rungs = make_policy().rungs(ModelState())
    rung = rung_for(tokens, rungs)
    assert rung >= min(tokens, rungs[-1])
    assert rung <= max(1024, tokens * 1.25)


# ---- (b) explicit, safe num_batch ----------------------------------------------------------------
def test_num_batch_explicit_and_at_most_512_without_gpu_figures() -> None:
    policy = make_policy()
    gpu = Gpu(policy, 80 * GIB, {"m": Weights(4 * GIB, 128 * 1024)})
    for i in range(400):
        # contexts below 4096, above 4096 and above 32768: Ollama's auto batch would be 512/1024/2048
        decision = gpu.run("m", 1 + i % 3, (1000, 6000, 40_000)[i % 3] if i > 30 else 1000 * (1 + i % 3))
        if decision.action == APPLY:
            assert 0 < decision.num_batch <= 512
    assert gpu.truncations == 0


def test_larger_num_batch_only_with_reported_headroom() -> None:
    policy = make_policy()
    world = Gpu(policy, 80 * GIB, {"m": Weights(4 * GIB, 128 * 1024)})
    model = None
    batches = set()
    for i in range(300):
        decision = world.run("m", 1, 2000 + 3000 * (i // 40))  # growing prompts: a reload every ~40 requests
        batches.add(decision.num_batch)
        model = policy.models["m"]
        model.gpu_total, model.gpu_free = 80 * GIB, 60 * GIB  # pynvml-style figures with ample headroom
    assert model is not None and max(batches) > 512


# ---- (c) spills to the CPU -----------------------------------------------------------------------
def test_severe_spill_reloads_at_once_with_a_smaller_batch_then_a_tighter_margin() -> None:
    policy = make_policy(num_batch_arms=(256, 512))
    # 8 GB: 4.6 GiB weights, 128 KiB/token KV; 12k-token documents with margin need ~16k = 2 GiB KV
    gpu = Gpu(policy, 8 * GIB, {"m": Weights(int(5.3 * GIB), 128 * 1024)})
    codes = []
    for _ in range(60):
        decision = gpu.run("m", 1, 11_000)
        codes.append(decision.reason_code)
        assert decision.action != APPLY or decision.num_ctx >= math.ceil(11_000 * RATIO)
    model = policy.models["m"]
    assert "relieve_spill" in codes
    assert model.batch_cap == 256 and model.loaded_batch == 256
    assert gpu.truncations == 0
    assert gpu.loads <= 6
    final = policy.recommend(Demand("m", 1, 11_000, frozenset(), 0, 2))
    assert final.reason_code in ("keep_loaded", "avoid_reload") and not final.reload


def test_spill_at_the_smallest_batch_switches_to_the_tight_margin() -> None:
    policy = make_policy(num_batch_arms=(512,))
    gpu = Gpu(policy, 8 * GIB, {"m": Weights(int(5.9 * GIB), 128 * 1024)})
    for _ in range(40):
        gpu.run("m", 1, 11_000)
    model = policy.models["m"]
    assert model.tight.startswith("spilled")
    assert model.loaded_ctx < 20480, "the truncation guard's first growth is left for a smaller context"
    assert model.loaded_ctx >= math.ceil(11_000 * RATIO) + 24
    assert "tight margin" in explain(policy, "m", 1).reason


def test_small_spill_waits_for_the_next_reload() -> None:
    policy = make_policy(spill_reload_fraction=0.5)
    gpu = Gpu(policy, 8 * GIB, {"m": Weights(int(5.3 * GIB), 128 * 1024)})
    for _ in range(30):
        decision = gpu.run("m", 1, 11_000)
        assert decision.reason_code != "relieve_spill"
    assert policy.models["m"].batch_cap == 256


# ---- (d) models sharing a GPU ------------------------------------------------------------------
def test_models_evicting_each_other_move_to_the_tight_rung_and_then_co_reside() -> None:
    policy = make_policy()
    # 24 GB: both fit only at tight contexts (a 14B with ~8k need and an 8B with ~39k-token documents)
    models = {"big": Weights(int(9.3 * GIB), 192 * 1024), "small": Weights(int(5.3 * GIB), 128 * 1024)}
    gpu = Gpu(policy, int(23.5 * GIB), models)
    moves = []
    for i in range(400):
        if i % 2:
            decision = gpu.run("big", 1 + i % 3, 6500)
        else:
            decision = gpu.run("small", 10 + i % 4, 35_000 if i % 4 == 0 else 3000)
        if decision.reason_code == "co_reside":
            moves.append(decision.reason)
    assert moves and all("evicted by other models" in reason for reason in moves)
    loads_before = gpu.loads
    for i in range(200):
        if i % 2:
            gpu.run("big", 1 + i % 3, 6500)
        else:
            gpu.run("small", 10 + i % 4, 35_000 if i % 4 == 0 else 3000)
    assert gpu.loads == loads_before, "the two models co-reside once tight"
    assert gpu.truncations == 0
    for name in models:
        assert policy.models[name].tight.startswith("reloaded")
        assert "evicted by other models" in explain(policy, name, 1 if name == "big" else 10).reason


def test_loads_of_a_lone_model_or_right_after_a_change_are_not_evictions() -> None:
    """Under concurrency in-flight requests with the previous options reload the runner back and forth;
    with one model nothing else can have evicted it: neither makes the model tight."""
    policy = make_policy()
    gpu = Gpu(policy, 80 * GIB, {"m": Weights(4 * GIB, 128 * 1024)})
    for _ in range(10):
        gpu.run("m", 1, 3000)
    model = policy.models["m"]
    for _ in range(50):
        gpu.runners.clear()  # unloaded behind the tuner's back (keep-alive expiry)
        gpu.run("m", 1, 3000)
    assert model.tight == "" and model.evictions == []
    policy.models["other"] = type(model)()
    ctx = model.loaded_ctx
    gpu.run("m", 2, 20_000)  # grows: a new configuration
    assert model.loaded_ctx > ctx
    for _ in range(policy.s.eviction_grace - 2):
        gpu.runners.clear()
        gpu.run("m", 1, 3000)
    assert model.evictions == []


def test_batches_below_512_only_after_a_spill() -> None:
    policy = make_policy()
    gpu = Gpu(policy, 80 * GIB, {"m": Weights(4 * GIB, 128 * 1024)})
    for i in range(400):
        decision = gpu.run("m", 1, 2000 + 3000 * (i // 40))  # a reload every ~40 requests
        assert decision.action != APPLY or decision.num_batch == 512


def test_tight_moves_never_fall_below_a_need_already_seen() -> None:
    """Models that never fit together keep being evicted: the co-residence move may go down once, but not
    back below a need a request has shown (else every eviction and the next large request ping-pong)."""
    rng = random.Random(5)
    policy = make_policy()
    models = {"big": Weights(int(9.3 * GIB), 192 * 1024), "small": Weights(int(5.3 * GIB), 128 * 1024)}
    gpu = Gpu(policy, 14 * GIB, models)
    changes, last = 0, None
    for i in range(1000):
        if i % 2:
            gpu.run("big", 1, 6500)
        else:
            decision = gpu.run("small", 10, rng.randint(20_000, 36_000))
            options = (decision.num_ctx, decision.num_batch)
            changes += last is not None and options != last
            last = options
    assert policy.models["small"].tight
    assert gpu.truncations == 0
    assert changes <= 8


def test_co_residence_tightness_ends_when_evictions_stop() -> None:
    policy = make_policy()
    models = {"big": Weights(int(9.3 * GIB), 192 * 1024), "small": Weights(int(5.3 * GIB), 128 * 1024)}
    gpu = Gpu(policy, 14 * GIB, models)
    for i in range(200):
        gpu.run("big" if i % 2 else "small", 1, 6500 if i % 2 else 20_000)
    assert policy.models["small"].tight
    for _ in range(policy.s.eviction_window * 10 + 2):  # the big model is gone: no more evictions
        gpu.run("small", 1, 20_000)
    assert policy.models["small"].tight == "" and gpu.truncations == 0


def test_a_model_on_another_ollama_host_never_evicts() -> None:
    """Learned state is per (host, model): reloads of a lone model on one host are not evictions by a model
    that lives on another host."""
    policy = make_policy()
    gpu = Gpu(policy, 80 * GIB, {"m": Weights(4 * GIB, 128 * 1024)})
    for _ in range(10):
        gpu.run("m", 1, 3000)
    policy.models["m @other-host"] = type(policy.models["m"])()
    for _ in range(50):
        gpu.runners.clear()  # unloaded behind the tuner's back (keep-alive expiry)
        gpu.run("m", 1, 3000)
    assert policy.models["m"].tight == "" and policy.models["m"].evictions == []
