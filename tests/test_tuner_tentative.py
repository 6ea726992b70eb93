"""Estimates made from priors (no measured tokens-per-unit ratio, no output seen for the template) claim a
generous rung for the request itself, and the request's outcome replaces that claim with what it needed."""

from __future__ import annotations

from tuner_service.explain import explain
from tuner_service.policy import Demand, Observation, Policy
from tuner_service.settings import PolicySettings
from tuner_service.state import ladder, rung_for

MODEL = "llama3.2:3b"
RUNGS = ladder(1024, 262144, 0, 4)


def _outcome(template_id: int, finished_at: float, eval_count: int = 30) -> Observation:
    """A whole-count outcome of 2,000 units that were 2,024 prompt tokens (a ratio of 1.0)."""
    return Observation(
        MODEL,
        template_id,
        2000,
        2,
        False,
        0,
        0,
        0,
        2024,
        eval_count,
        2.0,
        0.0,
        0.4,
        1.5,
        "stop",
        True,
        loaded_context_length=32768,
        finished_at=finished_at,
    )


def test_a_claim_from_the_output_prior_ends_with_the_outcome() -> None:
    policy = Policy(PolicySettings())
    policy.observe(_outcome(1, 100.0))  # the model is known and calibrated (ratio 1.0)
    decision = policy.recommend(Demand(MODEL, 2, 2000, frozenset(), 0, 2))  # template 2: no output seen
    assert decision.need >= 2024 + policy.s.output_reserve_tokens  # the prior reserve protects this request
    model = policy.models[MODEL]
    assert policy.active_need(model) == rung_for(decision.need * policy.s.margin, RUNGS)
    assert "1 tentative claims" in explain(policy, MODEL, 0).reason
    policy.observe(_outcome(2, 101.0))
    assert policy.active_need(model) == rung_for((2024 + 30) * policy.s.margin, RUNGS)
    assert "tentative" not in explain(policy, MODEL, 0).reason


def test_a_measured_ratio_replaces_the_prior_from_the_first_whole_count() -> None:
    policy = Policy(PolicySettings())
    policy.observe(_outcome(1, 100.0))
    model = policy.models[MODEL]
    assert policy.ratio_upper(model) < policy.s.units_ratio_prior
    assert policy.ratio_upper(model) >= (2024 - 24) / 2000  # never below what was measured


def test_a_truncated_outcome_keeps_the_tentative_claim() -> None:
    policy = Policy(PolicySettings())
    policy.observe(_outcome(1, 100.0))
    decision = policy.recommend(Demand(MODEL, 2, 2000, frozenset(), 0, 2))
    model = policy.models[MODEL]
    claimed = policy.active_need(model)
    cut = Observation(
        MODEL,
        2,
        2000,
        2,
        True,
        2048,
        0,
        0,
        1025,
        30,
        2.0,
        0.0,
        0.4,
        1.5,
        "length",
        True,
        loaded_context_length=2048,
        finished_at=101.0,
    )
    assert policy.observe(cut).truncated
    assert policy.active_need(model) >= claimed == rung_for(decision.need * policy.s.margin, RUNGS)
