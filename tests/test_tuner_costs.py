"""The policy prices what a context costs all traffic: rent-or-buy, claims that expire by time, hysteresis,
reloads told apart from queue waits, KV bytes per token learned from /api/ps sizes."""

from __future__ import annotations

import dataclasses
import itertools
import math

from tuner_service import costs
from tuner_service.explain import explain
from tuner_service.policy import APPLY, RUNNER_KEPT, RUNNER_LOADED, Advice, Demand, Observation, Policy
from tuner_service.settings import PolicySettings

from tuner_fixtures import ran, served

GIB = 1 << 30
MODEL = "m"
LOAD_S = 3.5


def make_policy(**overrides: object) -> Policy:
    return Policy(dataclasses.replace(PolicySettings(), **overrides))


class SpillWorld:
    """One model on one GPU as Ollama runs it: a reload on any option change (LOAD_S), layers beyond the VRAM on
    the CPU, where a token costs ten times as long; requests follow each other with ``gap_s`` seconds between."""

    def __init__(
        self,
        policy: Policy,
        vram: int = 8 * GIB,
        weights: int = int(5.1 * GIB),
        kv_per_token: int = 128 * 1024,
        default_ctx: int = 4096,
        gap_s: float = 0.0,
        load_s: float = LOAD_S,
    ) -> None:
        self.policy, self.vram, self.weights = policy, vram, weights
        self.kv, self.default_ctx = kv_per_token, default_ctx
        self.gap_s, self.load_s = gap_s, load_s
        self.loaded: tuple[int, int] | None = None
        self.t = 1_000.0
        self.loads = self.truncations = 0
        self.history: list[int] = []  # the context each request ran at
        self.latencies: list[float] = []

    def size(self, ctx: int, batch: int) -> int:
        return self.weights + self.kv * ctx + 1536 * 1024 * batch

    def spill(self, ctx: int, batch: int) -> float:
        size = self.size(ctx, batch)
        return max(0.0, 1 - self.vram / size)

    def seconds(self, ctx: int, batch: int, prompt: int, output: int) -> tuple[float, float]:
        slow = 1 + 10 * self.spill(ctx, batch)
        return prompt * 0.0002 * slow, output * 0.01 * slow

    def run(self, units: int, template_id: int = 1, output: int = 200) -> Advice:
        demand = Demand(MODEL, template_id, units, frozenset(), 0, 2)
        decision = self.policy.recommend(demand)
        options = (decision.num_ctx, decision.num_batch) if decision.action == APPLY else (0, 0)
        ctx, batch = options[0] or self.default_ctx, options[1] or 512
        load = options != self.loaded
        self.loads += load
        self.loaded = options
        prompt = math.ceil(units * 1.1) + 24
        truncated = prompt + output > ctx
        self.truncations += truncated
        prompt_s, eval_s = self.seconds(ctx, batch, prompt, output)
        load_s = self.load_s if load else 0.005
        total = load_s + prompt_s + eval_s
        self.t += total + self.gap_s
        self.history.append(ctx)
        self.latencies.append(total)
        size = self.size(ctx, batch)
        self.policy.observe(
            ran(
                MODEL,
                template_id,
                units,
                decision,
                (prompt, output),
                (load_s, prompt_s, eval_s),
                ctx,
                (size, min(size, self.vram)),
                self.t,
                load,
            )
        )
        return decision

    def fast_latency(self, units: int, output: int = 200) -> float:
        """What a request takes on a context that fits the GPU."""
        return sum(self.seconds(4096, 512, math.ceil(units * 1.1) + 24, output))


def revisits(history: list[int], window: int = 10) -> int:
    left: dict[int, int] = {}
    count = 0
    for index, (before, now) in enumerate(itertools.pairwise(history), start=1):
        if now != before:
            left[before] = index
            count += index - left.get(now, -window - 1) <= window
    return count


def warm(world: SpillWorld, units: int = 1500, count: int = 20) -> None:
    for _ in range(count):
        world.run(units)


def test_rent_or_buy_returns_to_the_small_context_within_twice_the_hindsight_best() -> None:
    """One request needs 50k tokens (spilled to the CPU); the traffic after it needs 2k. Staying costs every
    later request the spill; returning costs one reload. The online cost is at most twice the better of the two
    (plus the request on which the rent crossed the reload cost)."""
    world = SpillWorld(make_policy())
    warm(world)
    fit = world.history[-1]
    world.run(45_000, template_id=2)
    big = world.history[-1]
    assert big > fit and world.spill(big, 512) > 0 and world.truncations == 0
    loads_before = world.loads
    extra = []
    for _ in range(100):
        world.run(1500)
        extra.append(world.latencies[-1] - world.fast_latency(1500))
    assert world.history[-1] < big, "the small traffic got its fast context back"
    assert world.loads - loads_before == 1
    paid = sum(e for e in extra if e > 0)
    hindsight = min(LOAD_S, sum(world.seconds(big, 512, math.ceil(1500 * 1.1) + 24, 200)) * 100)
    one_request = max(extra)
    assert paid <= 2 * hindsight + one_request
    assert world.truncations == 0


def test_a_session_still_sending_holds_its_context_without_flip_flop_then_releases_it() -> None:
    """A long session sends a turn every third request; between its turns the small traffic pays the spill.
    Hysteresis: no context is revisited within 10 requests more than once per 100 requests. Once the session
    stops, the model returns to the small context."""
    world = SpillWorld(make_policy())
    warm(world)
    for i in range(300):
        world.run(45_000 + 30 * i if i % 3 == 0 else 1500, template_id=2 if i % 3 == 0 else 1)
    assert world.truncations == 0
    assert revisits(world.history[20:]) <= 3
    big = world.history[-3]
    for _ in range(40):
        world.run(1500)
    assert world.history[-1] < big


def test_a_claim_ends_when_its_session_stops_sending_not_after_a_request_count() -> None:
    """After a 50k request, the small traffic pays the spill until the rent covers the return: two reloads while
    the large request's claim is active, one once it has expired. Expiry is by time: the same requests, minutes
    apart, end the claim after one request."""

    def small_requests_at_the_large_context(gap_s: float) -> int:
        world = SpillWorld(make_policy(), load_s=20.0)
        warm(world)
        world.run(45_000, template_id=2)
        big = world.history[-1]
        world.gap_s = gap_s
        for _ in range(12):
            world.run(1500)
        assert world.truncations == 0
        return world.history.count(big) - 1

    assert small_requests_at_the_large_context(400.0) < small_requests_at_the_large_context(1.0)


def test_queue_waits_are_not_reloads_and_do_not_price_a_reload() -> None:
    policy = make_policy()

    def observe(ctx: int, load_s: float, runner_load: int = 0) -> bool:
        return policy.observe(
            Observation(
                MODEL,
                1,
                800,
                2,
                True,
                ctx,
                512,
                0,
                900,
                50,
                load_s + 1.0,
                load_s,
                0.2,
                0.8,
                "stop",
                True,
                runner_load=runner_load,
            )
        ).reloaded

    assert observe(8192, 3.5, RUNNER_LOADED)
    assert not observe(8192, 9.0, RUNNER_KEPT)  # waited behind other requests of the model
    model = policy.models[MODEL]
    assert model.reloads == 1 and model.reload_cost_s == 3.5
    # Without the gateway's judgement: same options and a wait shorter than half a measured load is a queue
    # wait; changed options with a long load_duration are a reload.
    assert not observe(8192, 1.5)
    assert observe(16384, 3.6)
    assert model.reloads == 2


def test_kv_bytes_per_token_from_two_contexts_and_advice_when_traffic_needs_more_than_fits() -> None:
    policy = make_policy()
    world = SpillWorld(policy)
    warm(world)
    world.run(45_000, template_id=2)
    model = policy.models[MODEL]
    assert costs.kv_bytes_per_token(model) == 128 * 1024
    limit = costs.fit_limit(model)
    assert world.spill(limit, 512) == 0 and world.spill(limit + 1024, 512) > 0
    reason = explain(policy, MODEL, 2).reason
    assert "128 KiB per context token" in reason
    assert "OLLAMA_KV_CACHE_TYPE=q8_0" in reason and "OLLAMA_FLASH_ATTENTION=1" in reason


class SharedGpu:
    """Two models on one GPU as Ollama runs them: a runner per model, a reload on an option change, and the
    least recently used runner evicted when the two do not fit together."""

    def __init__(self, policy: Policy, vram: int, weights: dict[str, tuple[int, int]]) -> None:
        self.policy, self.vram, self.weights = policy, vram, weights  # model -> (weights, KV bytes per token)
        self.runners: dict[str, tuple[tuple[int, int], int]] = {}
        self.loads = self.evictions = self.truncations = 0
        self.t = 1_000.0

    def run(self, model: str, units: int) -> Advice:
        template_id = 1 if units < 10_000 else 2
        demand = Demand(model, template_id, units, frozenset(), 0, 2)
        decision = self.policy.recommend(demand)
        options = (decision.num_ctx, decision.num_batch) if decision.action == APPLY else (0, 0)
        ctx = options[0] or 4096
        weights, per_token = self.weights[model]
        size = weights + per_token * ctx
        loaded = self.runners.pop(model, None)
        load = loaded is None or loaded[0] != options
        while load and self.runners and sum(s for _, s in self.runners.values()) + size > self.vram:
            self.runners.pop(next(iter(self.runners)))
            self.evictions += 1
        self.runners[model] = (options, size)
        self.loads += load
        prompt = math.ceil(units * 1.1) + 24
        self.truncations += prompt + 200 > ctx
        load_s = 4.0 if load else 0.005
        self.t += load_s + 2.0
        self.policy.observe(
            served(
                demand,
                decision,
                prompt,
                200,
                total_s=load_s + 2.0,
                load_s=load_s,
                prompt_eval_s=0.5,
                loaded_context_length=ctx,
                model_size=size,
                model_vram=size,
                finished_at=self.t,
                runner_load=RUNNER_LOADED if load else RUNNER_KEPT,
            )
        )
        return decision


def test_a_context_that_keeps_evicting_the_other_model_returns_to_one_where_both_fit() -> None:
    """An 8B model's long session needs 60k tokens; a 14B model serves small chats alongside. At 60k the two do
    not fit and evict each other on every alternation: the evictions are priced like reloads, so once the long
    session has its answer the 8B model returns to a context where both fit, and the loads stop."""
    policy = make_policy()
    gpu = SharedGpu(policy, 23 * GIB, {"small": (5 * GIB, 128 * 1024), "big": (9 * GIB, 192 * 1024)})
    for _ in range(40):
        gpu.run("small", 1500)
        gpu.run("big", 2000)
    gpu.run("small", 55_000)
    assert gpu.truncations == 0
    loads = gpu.loads
    for _ in range(60):
        gpu.run("big", 2000)
        gpu.run("small", 1500)
    assert gpu.truncations == 0
    assert gpu.loads - loads <= 8, "a few evictions, then the two models co-reside"
    last = gpu.loads
    for _ in range(40):
        gpu.run("big", 2000)
        gpu.run("small", 1500)
    assert gpu.loads == last


def test_growth_driven_by_truncation_floors_is_bounded_and_a_runaway_is_stopped_and_explained() -> None:
    """An Ollama that reports only the uncached part of the prompt (a cached head) makes every answer look
    truncated: each signal raises the template's floor. Growth is at most 2x per decision, and after three
    such growths without a rise in the requests' own estimates the runaway is stopped and explained."""
    policy = make_policy()
    world = SpillWorld(policy, vram=80 * GIB)
    warm(world, units=3000)
    need_rung = world.history[-1]
    contexts = []
    for _ in range(30):
        decision = policy.recommend(Demand(MODEL, 1, 3000, frozenset(), 0, 2))
        contexts.append(decision.num_ctx)
        policy.observe(
            Observation(
                MODEL,
                1,
                3000,
                2,
                True,
                decision.num_ctx,
                decision.num_batch,
                0,
                400,
                200,
                2.0,
                0.005,
                0.2,
                1.5,
                "stop",
                True,
                finished_at=world.t,
            )
        )
        world.t += 2.0
    assert all(b <= 2 * a for a, b in itertools.pairwise(contexts))
    assert max(contexts) <= 8 * need_rung
    assert len(set(contexts[-10:])) == 1
    assert "runaway stopped" in explain(policy, MODEL, 1).reason


def test_on_a_cpu_only_host_a_large_context_costs_no_speed_so_the_model_does_not_shrink_between_turns() -> None:
    """Ollama on a CPU-only host reports size_vram 0 at every context: the layers run on the CPU whatever the
    context, so a long session's context slows nothing between its turns. The model grows for the session and
    stays: no shrink for a speed it cannot gain, and no growth back on the next turn."""
    policy = make_policy()
    world = SpillWorld(policy, vram=0)
    warm(world)
    loads = world.loads
    for i in range(60):
        world.run(45_000 + 30 * i if i % 3 == 0 else 1500, template_id=2 if i % 3 == 0 else 1)
    assert world.truncations == 0
    assert world.loads - loads <= 2, "the growths for the session, no shrink between its turns"
    model = policy.models[MODEL]
    assert costs.in_ram(model) and costs.spill_share(model, model.loaded_ctx) == 0
    assert "fit in VRAM" not in explain(policy, MODEL, 2).reason


def test_a_pending_spill_relief_never_loads_less_than_the_request_needs() -> None:
    """A spill at the loaded context schedules a reload with a smaller num_batch; when the next request needs
    more than that context, the reload is a growth that holds it (never the spilled context again)."""
    world = SpillWorld(make_policy(), vram=int(6.3 * GIB))
    for _ in range(20):
        world.run(6000)
        if world.policy.models[MODEL].relieve[0] == "relieve_spill":
            break
    assert world.policy.models[MODEL].relieve[0] == "relieve_spill"
    decision = world.run(45_000, template_id=2)
    assert decision.num_ctx >= decision.need and world.truncations == 0


def test_api_ps_figures_of_a_runner_at_another_context_are_not_a_spill() -> None:
    """/api/ps is read at intervals: under concurrency an outcome at 8192 may carry the figures of the spilled
    57344 runner loaded before it. Taken at face value they would schedule a spill relief at 8192."""
    policy = make_policy()
    world = SpillWorld(policy)
    warm(world)
    decision = policy.recommend(Demand(MODEL, 1, 1500, frozenset(), 0, 2))
    size = world.size(57344, decision.num_batch)
    policy.observe(
        ran(MODEL, 1, 1500, decision, (1674, 200), (0.0, 0.3, 2.0), 57344, (size, world.vram), world.t + 5, False)
    )
    assert policy.models[MODEL].relieve == ("", "") and policy.models[MODEL].spilled == (0, 0)


def test_decode_speed_at_a_rung_is_learned_from_the_requests_that_would_fit_a_lower_one() -> None:
    """Decode slows with the tokens in the context, not only with spill: a 50k-token turn decodes several times
    slower than a small request at the same num_ctx. The speed that prices a rung for the rest of the traffic
    (their rent, the coming request) is the small requests' there; the long turn's would overstate it (a small
    request priced at ~105 s where it took 2-28 s) and return the model after every turn."""
    policy = make_policy()
    world = SpillWorld(policy)
    warm(world)
    world.run(45_000, template_id=2)
    big = world.history[-1]
    model = policy.models[MODEL]
    assert big not in model.decode_spt, "the long turn itself does not set the speed of the small traffic"
    decision = policy.recommend(Demand(MODEL, 1, 1500, frozenset(), 0, 2))
    assert decision.num_ctx == big
    size = world.size(big, decision.num_batch)
    policy.observe(
        ran(MODEL, 1, 1500, decision, (1674, 200), (0.0, 0.5, 4.0), big, (size, world.vram), world.t + 5, False)
    )
    assert model.decode_spt[big] == 4.0 / 200


def test_the_coming_request_is_priced_at_its_typical_output_not_the_reserve() -> None:
    """The output reserve (a high quantile) sizes the context; the time a request is expected to take at a
    spilled context, which the rent-or-buy rule weighs against a reload, uses its template's median output."""
    policy = make_policy()
    world = SpillWorld(policy)
    for _ in range(19):
        world.run(1500, output=50)
    world.run(1500, output=2000)
    template = policy.models[MODEL].templates[1]
    assert policy.output_reserve(template, 0) >= 1500
    assert 45 <= policy.expected_output(template, 0) <= 60
    assert policy.expected_output(template, 30) == 30
