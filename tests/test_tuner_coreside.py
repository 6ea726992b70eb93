"""Models sharing one GPU are planned together: an eviction teaches what did not fit, growth stays within the
room the other model leaves, a displaced model comes back at a context that fits; an expiry is no eviction."""

from __future__ import annotations

import math

from tuner_service import costs
from tuner_service.policy import APPLY, Demand, Policy
from tuner_service.settings import PolicySettings
from tuner_service.state import ModelState

from tuner_fixtures import ran

GIB = 1 << 30
LOAD_S = 4.0
BIG, SMALL = "big", "small"  # a 14B-like model and an 8B-like one: (weights, KV bytes per token)
SHAPES = {BIG: (int(9.0 * GIB), 196_608), SMALL: (int(4.9 * GIB), 131_072)}


class SharedGpu:
    """Two models on one GPU as Ollama runs them: a load that does not fit beside the other model evicts it,
    a model idle longer than the keep-alive is unloaded; ``gap_s`` seconds pass between requests."""

    def __init__(self, policy: Policy, vram: int = 23 * GIB, gap_s: float = 5.0) -> None:
        self.policy, self.vram, self.gap_s = policy, vram, gap_s
        self.loaded: dict[str, tuple[int, int]] = {}
        self.last: dict[str, float] = {}
        self.t = 1_000.0
        self.loads = self.evictions = self.truncations = 0

    @staticmethod
    def size(name: str, ctx: int) -> int:
        weights, per_token = SHAPES[name]
        return weights + per_token * ctx

    def run(self, name: str, units: int, template_id: int, output: int = 200) -> int:
        for other, at in list(self.last.items()):
            if self.t - at > self.policy.s.keep_alive_seconds:
                self.loaded.pop(other, None)
        decision = self.policy.recommend(Demand(name, template_id, units, frozenset(), 0, 2))
        options = (decision.num_ctx, decision.num_batch) if decision.action == APPLY else (0, 0)
        ctx = options[0] or 32768
        load = self.loaded.get(name) != options
        if load:
            self.loads += 1
            self.loaded[name] = options
            for other, (other_ctx, _batch) in list(self.loaded.items()):
                if other != name and self.size(name, ctx) + self.size(other, other_ctx or 32768) > self.vram:
                    del self.loaded[other]
                    self.evictions += 1
        prompt = math.ceil(units * 1.1) + 24
        self.truncations += prompt + output > ctx
        load_s = LOAD_S if load else 0.0
        total = load_s + prompt * 0.0002 + output * 0.01
        self.t += total
        self.last[name] = self.t
        size = self.size(name, ctx)
        seconds = (load_s, prompt * 0.0002, output * 0.01)
        self.policy.observe(
            ran(name, template_id, units, decision, (prompt, output), seconds, ctx, (size, size), self.t, load)
        )
        self.t += self.gap_s
        return ctx


def make_policy() -> Policy:
    return Policy(PolicySettings())


def test_a_long_session_beside_another_models_chats_settles_where_both_fit() -> None:
    """The small model's session grows to ~45k tokens while the big model serves ~6k-token chats. At the
    context its growth would pick, the two do not fit: after the first eviction the models are planned
    together (the small one at the rung that holds its need, the big one beside it), so the rest of the
    alternating traffic loads nothing; without joint planning they evict each other for many requests."""
    world = SharedGpu(make_policy(), vram=22 * GIB)
    for _ in range(8):
        world.run(BIG, 5000, 1)
        world.run(SMALL, 1500, 2)
    before = world.loads
    for turn in range(30):
        world.run(SMALL, 39_000 + 40 * turn, 3)
        world.run(BIG, 5000, 1)
    assert world.truncations == 0
    assert world.loads - before <= 4, f"{world.loads - before} loads while both models were in use"


def test_an_expiry_after_the_keep_alive_is_not_an_eviction() -> None:
    """A model idle longer than the keep-alive was unloaded by Ollama: its next load (same options) says
    nothing about memory, so no eviction is counted and no bound on the host's memory is learned."""
    policy = make_policy()
    world = SharedGpu(policy, vram=40 * GIB, gap_s=5.0)
    for _ in range(6):
        world.run(BIG, 5000, 1)
        world.run(SMALL, 1500, 2)
    world.gap_s = policy.s.keep_alive_seconds + 60
    for _ in range(6):
        world.run(BIG, 5000, 1)
        world.run(SMALL, 1500, 2)
    assert world.evictions == 0 and world.loads >= 10  # every request after an idle gap loaded its model again
    assert policy.models[BIG].evictions == [] and policy.models[SMALL].evictions == []
    assert not policy.models[BIG].tight and not policy.host_bounds


def test_api_ps_figures_read_after_another_load_are_not_taken_as_the_size_at_a_context() -> None:
    model = ModelState()
    costs.remember_memory(model, (8192, 512), 6 * GIB, 6 * GIB)
    costs.remember_memory(model, (32768, 512), 9 * GIB, 9 * GIB)
    costs.remember_memory(model, (65536, 512), 9 * GIB, 9 * GIB)  # the 32768 runner's figures, read late
    assert (65536, 512) not in model.memory
    assert costs.kv_bytes_per_token(model) == 3 * GIB / (32768 - 8192)
