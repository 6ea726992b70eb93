"""Policy on synthetic outcome streams: no truncation, few reloads, stability, back-off, pins, passthrough."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tuner_service.policy import APPLY, MAX_UNCONFIRMED_MODELS, PASSTHROUGH, Advice, Demand, Observation, Policy
from tuner_service.settings import PolicySettings
from tuner_service.state import TemplateState, ladder, rung_for

from tuner_fixtures import served

MODEL = "m"


class World:
    """A stand-in Ollama: a fixed tokens-per-unit ratio, one runner per model, prompts cut to half num_ctx."""

    def __init__(self, policy: Policy, ratio: float = 1.1, default_ctx: int = 4096, overhead: int = 8) -> None:
        self.policy, self.ratio, self.default_ctx, self.overhead = policy, ratio, default_ctx, overhead
        self.loaded: tuple[int, int] | None = None
        self.reloads = self.truncations = 0
        self.t = 1_000.0  # seconds: each request takes 2 s

    def prompt_tokens(self, units: int, messages: int) -> int:
        return math.ceil(units * self.ratio) + self.overhead * (messages + 1)

    def run(
        self, template_id: int, units: int, output: int, num_predict: int = 0, messages: int = 2
    ) -> tuple[Advice, bool]:
        demand = Demand(MODEL, template_id, units, frozenset(), num_predict, messages)
        decision = self.policy.recommend(demand)
        options = (decision.num_ctx, decision.num_batch) if decision.action == APPLY else (0, 0)
        if self.loaded is not None and options != self.loaded:
            self.reloads += 1
        self.loaded = options
        ctx = options[0] or self.default_ctx
        prompt = self.prompt_tokens(units, messages)
        truncated = prompt > ctx
        self.truncations += truncated
        self.t += 2.0
        self.policy.observe(served(demand, decision, ctx // 2 + 2 if truncated else prompt, output, finished_at=self.t))
        return decision, truncated


def make_policy(**overrides: object) -> Policy:
    return Policy(dataclasses.replace(PolicySettings(), **overrides))


def teach(world: World, template_id: int, units: int, count: int, output: int = 200) -> None:
    for _ in range(count):
        world.run(template_id, units, output)


# (a) -------------------------------------------------------------------------------------------
requests = st.lists(
    st.tuples(
        st.integers(0, 6),
        st.integers(1, 40_000),
        st.integers(1, 2000),
        st.sampled_from([0, 0, 128, 4096]),
        st.integers(0, 12),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(stream=requests, ratio=st.floats(0.8, 1.45), default_ctx=st.sampled_from([2048, 4096, 32768]))
def test_never_below_the_request_need(stream, ratio: float, default_ctx: int) -> None:
    policy = make_policy(default_num_ctx=default_ctx)
    world = World(policy, ratio=ratio, default_ctx=default_ctx)
    top = ladder(1024, 262144, 0)[-1]
    for template_id, units, output, num_predict, messages in stream:
        decision, truncated = world.run(template_id, units, min(output, num_predict or output), num_predict, messages)
        assert not truncated
        assert decision.need >= world.prompt_tokens(units, messages) + num_predict
        if decision.action == APPLY:
            assert decision.num_ctx >= min(decision.need, top)
        else:
            assert default_ctx >= decision.need


# (b) -------------------------------------------------------------------------------------------
def test_alternating_templates_share_one_context() -> None:
    rng = random.Random(3)
    world = World(make_policy())
    needs = {1: 1500, 2: 5000, 3: 9000}
    changes, last, naive_changes, naive_last = 0, None, 0, None
    for i in range(600):
        template_id = (1, 2, 3)[i % 3]
        units = needs[template_id] + rng.randint(-100, 100)
        output = rng.randint(100, 300)
        decision, _ = world.run(template_id, units, output)
        naive = rung_for(1.2 * (world.prompt_tokens(units, 2) + output), ladder(1024, 262144, 0))
        if i >= 100:
            changes += decision.num_ctx != last
            naive_changes += naive != naive_last
        last, naive_last = decision.num_ctx, naive
    assert changes <= 5  # at most 1 per 100 requests once learned
    assert naive_changes > 400  # a per-template choice changes on most requests
    assert world.truncations == 0


# (c) -------------------------------------------------------------------------------------------
def test_stable_context_within_ten_observations() -> None:
    rng = random.Random(5)
    world = World(make_policy())
    seen = []
    for _ in range(110):
        decision, _ = world.run(4, 2600 + rng.randint(-260, 260), rng.randint(50, 400))
        seen.append(decision.num_ctx if decision.action == APPLY else 0)
    assert len(set(seen[10:])) == 1


# (d) -------------------------------------------------------------------------------------------
def test_one_truncation_signal_moves_the_template_up_at_once() -> None:
    policy = make_policy()
    world = World(policy)
    teach(world, 6, 2500, 5)
    before, _ = world.run(6, 2500, 200)
    assert before.action == APPLY
    # prompt_eval_count far below the calibrated estimate of 2500 units: the prompt was cut
    learned = policy.observe(
        Observation(MODEL, 6, 2500, 2, True, before.num_ctx, 0, 0, 1000, 100, 2.0, 0.01, 0.4, 1.5, "stop", True)
    )
    assert learned.truncated
    after, _ = world.run(6, 2500, 200)
    assert after.num_ctx > before.num_ctx
    assert policy.models[MODEL].templates[6].truncations == 1


def test_done_reason_length_without_cap_is_a_truncation_signal() -> None:
    policy = make_policy()
    world = World(policy)
    teach(world, 6, 2500, 5)
    before, _ = world.run(6, 2500, 200)
    learned = policy.observe(
        Observation(MODEL, 6, 2500, 2, True, before.num_ctx, 0, 0, 2800, 1200, 2.0, 0.01, 0.4, 1.5, "length", True)
    )
    assert learned.truncated
    assert world.run(6, 2500, 200)[0].num_ctx > before.num_ctx


# (e) -------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(stream=st.lists(st.tuples(st.integers(100, 4000), st.integers(1, 500), st.booleans()), max_size=40))
def test_pinned_template_never_changes(stream) -> None:
    """Requests that fit the pin (a pin is raised only where it would truncate a request)."""
    policy = make_policy()
    world = World(policy)
    teach(world, 1, 20_000, 4)
    policy.models[MODEL].templates[8] = TemplateState(pinned=True, pin_ctx=8192, pin_batch=512)
    for units, output, truncation in stream:
        decision, _ = world.run(8, units, output)
        assert (decision.action, decision.num_ctx, decision.num_batch) == (APPLY, 8192, 512)
        if truncation:
            policy.observe(
                Observation(MODEL, 8, units, 2, True, 8192, 512, 0, 10, 1, 1.0, 0.0, 0.1, 0.5, "length", True)
            )


# (f) -------------------------------------------------------------------------------------------
def test_passthrough_without_data_or_when_the_client_set_options() -> None:
    policy = make_policy()
    assert policy.recommend(Demand(MODEL, 1, 800)).action == PASSTHROUGH
    assert policy.recommend(Demand(MODEL, 0, 800)).reason_code == "no_data"
    world = World(policy)
    teach(world, 1, 800, 5)
    client = policy.recommend(Demand(MODEL, 1, 800, frozenset({"num_ctx"})))
    assert (client.action, client.reason_code) == (PASSTHROUGH, "client_set")


# reload awareness ------------------------------------------------------------------------------
def test_managed_model_never_falls_back_to_the_default() -> None:
    world = World(make_policy())
    teach(world, 1, 1500, 5)
    for units in (200, 300, 100):
        decision, _ = world.run(0, units, 50)  # one-off prompts, no template
        assert decision.action == APPLY and decision.reason_code == "keep_loaded"
    assert world.reloads <= 1


def test_shrinks_once_a_large_template_is_gone_and_the_saving_pays() -> None:
    policy = make_policy(claim_idle_seconds=40, reload_cost_prior_seconds=0.1)
    world = World(policy)
    teach(world, 1, 20_000, 4)
    big = policy.models[MODEL].loaded_ctx
    teach(world, 2, 1000, 100)
    assert policy.models[MODEL].loaded_ctx < big
    assert world.truncations == 0


def test_calibration_learns_the_ratio_and_ignores_truncated_outcomes() -> None:
    policy = make_policy()
    world = World(policy, ratio=1.2)
    teach(world, 1, 1000, 20)
    model = policy.models[MODEL]
    assert 1.2 <= policy.ratio_upper(model) < 1.3
    before = model.calibration_samples
    learned = policy.observe(
        Observation(MODEL, 1, 9000, 2, True, 4096, 0, 0, 2050, 10, 1.0, 0.0, 0.1, 0.5, "stop", True)
    )
    assert learned.truncated and model.calibration_samples == before


def test_num_batch_changes_only_with_a_reload() -> None:
    rng = random.Random(9)
    world = World(make_policy())
    batches = []
    for i in range(300):
        decision, _ = world.run(1 + i % 2, (1000, 6000)[i % 2] + rng.randint(-50, 50), 200)
        batches.append((decision.num_ctx, decision.num_batch, decision.reload))
    for (ctx0, b0, _), (ctx1, b1, reload) in itertools.pairwise(batches):
        if b1 != b0:
            assert reload and ctx1 != ctx0


def test_models_only_recommended_for_are_bounded() -> None:
    """Made-up model names (each answered with the truncation guard's APPLY) cannot grow the tuner's memory;
    a model an outcome confirmed is never forgotten for them."""
    policy = Policy(PolicySettings())
    policy.observe(Observation(MODEL, 1, 800, 2, False, 0, 0, 0, 900, 10, 2.0, 0.0, 0.4, 1.5, "stop", True))
    for i in range(MAX_UNCONFIRMED_MODELS + 50):
        assert policy.recommend(Demand(f"made-up-{i}:1b", 0, 20_000)).action == APPLY
    unconfirmed = [name for name, m in policy.models.items() if not m.confirmed]
    assert len(unconfirmed) == MAX_UNCONFIRMED_MODELS and unconfirmed[-1] == f"made-up-{MAX_UNCONFIRMED_MODELS + 49}:1b"
    assert policy.models[MODEL].confirmed
