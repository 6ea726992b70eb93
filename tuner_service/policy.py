"""The tuner's decision policy: pure functions over in-memory state, no I/O; time comes from outcomes.

num_ctx is decided per model (one loaded runner serves every template of a model) and priced for all
of its traffic: a request that needs more context than is loaded gets it at once (never truncate what
can be served); a larger context that slows the rest of the traffic (spill to the CPU) is left by the
rent-or-buy rule once the extra time paid exceeds a reload (costs.py); a request's claim on a context
ends when requests needing it stop arriving. Once a model is managed every request for it carries the
same explicit options, because a request without num_ctx after an explicit one makes Ollama reload to
its default.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from ollama_optimizer.benefit import RUNNER_KEPT as RUNNER_KEPT  # re-exported: Outcome.runner_load
from ollama_optimizer.benefit import RUNNER_LOADED as RUNNER_LOADED
from ollama_optimizer.benefit import RUNNER_UNKNOWN, runner_loaded
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from . import coreside, costs, tentative
from .bandit import choose_num_batch
from .default_context import DefaultContext, default_context
from .evidence import CountReading, at_cut, read_counts
from .hosts import split_key
from .settings import PolicySettings
from .state import ArmStats, ModelState, TemplateState, ladder, rung_for, size_class

PASSTHROUGH = tuner_pb2.PASSTHROUGH  # Advice.action: the proto's Action values
APPLY = tuner_pb2.APPLY
CLIENT_OWNED = frozenset({"num_ctx", "num_batch"})
CONFIDENCE_K = 3.0  # confidence = n / (n + K)
MAX_UNCONFIRMED_MODELS = 256  # models known from Recommend alone (no outcome, pin or stored row yet)
EWMA = 0.1
_LADDERS = functools.lru_cache(maxsize=256)(ladder)  # by (min, max, model limit, steps, explicit rungs)

REASON_CODES = (
    "client_set",
    "no_data",
    "low_confidence",
    "pinned",
    "initial",
    "grow",
    "grow_truncation_guard",
    "shrink",
    "keep_loaded",
    "avoid_reload",
    "relieve_spill",
    "co_reside",
    "runaway_stopped",
    "reset",
)
RUNAWAY_GROWTHS = 3  # growths driven by truncation floors (not by the requests' own estimates) ...
RUNAWAY_WINDOW = 100  # ... within this many requests: a runaway


@dataclass(frozen=True)
class Demand:
    model: str
    template_id: int = 0
    prompt_units: int = 0
    client_options: frozenset[str] = frozenset()
    num_predict: int = 0
    message_count: int = 0
    default_ctx: int = 0  # Ollama's default context as the host saw it in /api/ps (0 = not seen)


@dataclass(frozen=True)
class Advice:
    action: tuner_pb2.Action
    num_ctx: int
    num_batch: int
    confidence: float
    reason: str
    reason_code: str
    need: int
    reload: bool = False
    reload_avoided: bool = False
    truncation_prevented: bool = False


@dataclass(frozen=True)
class Observation:
    """A validated outcome, in the units the policy uses (seconds, tokens, bytes)."""

    model: str
    template_id: int
    prompt_units: int
    message_count: int
    applied: bool
    num_ctx: int
    num_batch: int
    num_predict: int
    prompt_eval_count: int
    eval_count: int
    total_s: float
    load_s: float
    prompt_eval_s: float
    eval_s: float
    done_reason: str
    counts_known: bool
    gpu_used: int = 0
    gpu_total: int = 0
    loaded_context_length: int = 0
    model_size: int = 0  # /api/ps size and size_vram (bytes, 0 = unknown); vram < size = partial offload
    model_vram: int = 0
    finished_at: float = 0.0  # seconds (Unix); the policy's clock
    runner_load: int = RUNNER_UNKNOWN
    cached_count: int = 0  # prompt_eval_cached_count, meaningful when cached_known
    cached_known: bool = False
    ollama_version: str = ""  # "" = unknown: how prompt_eval_count was counted (evidence.py)
    observed_ctx: int = 0  # context Ollama reported after the request (0 = unknown)
    options_dropped: bool = False  # the host did not forward the options: num_ctx/num_batch never reached Ollama


@dataclass(frozen=True)
class Learned:
    """What one observation told the policy."""

    truncated: bool
    reloaded: bool
    foreign: bool = False  # a truncation at a context other than the one believed loaded: not escalated


class Policy:
    """All learning state plus the rules that turn it into decisions."""

    def __init__(self, settings: PolicySettings) -> None:
        self.s = settings
        self.models: dict[str, ModelState] = {}
        self.clock = 0.0  # the latest finish time of an outcome (seconds): claims expire by it
        self.host_bounds: dict[str, int] = {}  # Ollama host -> bytes its models in use did not fit in (coreside.py)

    # ---- estimates -------------------------------------------------------------------------
    def rungs(self, model: ModelState) -> list[int]:
        """The model's ladder (shared, never mutated), up to its cap or trained context."""
        return _LADDERS(
            self.s.ladder_min,
            self.s.ladder_max,
            model.num_ctx_cap or model.context_limit,
            self.s.ladder_steps,
            self.s.ladder_rungs,
        )

    def margin_for(self, model: ModelState) -> float:
        """The tight margin once the model must share memory (evicted or spilled), else the normal one."""
        return min(self.s.tight_margin, self.s.margin) if model.tight else self.s.margin

    def default_context(self, model: ModelState) -> DefaultContext:
        """Ollama's default context for the model and its basis: learned, the operator's, or assumed."""
        return default_context(
            model.default_ctx, self.s.default_num_ctx, model.ollama_version, model.gpu_total, model.context_limit
        )

    def default_ctx(self, model: ModelState) -> int:
        return self.default_context(model).num_ctx

    def believed_ctx(self, model: ModelState) -> int:
        """The context the model runs with now, as far as the tuner knows."""
        return model.loaded_ctx if model.managed and model.loaded_ctx else self.default_ctx(model)

    def calibrated(self, model: ModelState) -> bool:
        """A measured ratio exists: the upper quantile of a few samples is their largest, a measurement that
        beats the prior (which would otherwise set the first contexts). Counts that may leave out the cache
        give samples only from loads (a cold cache) or above the estimate (evidence.py)."""
        return model.calibration_samples >= 1

    def ratio_upper(self, model: ModelState) -> float:
        if self.calibrated(model):
            return model.ratio.quantile(self.s.calibration_quantile)
        return self.s.units_ratio_prior

    def ratio_lower(self, model: ModelState) -> float:
        """The lower calibration quantile (truncation evidence): only from the full number of samples."""
        if model.calibration_samples >= self.s.calibration_min_samples:
            return model.ratio.quantile(1 - self.s.calibration_quantile, upper=False)
        return self.s.units_ratio_prior / 3

    def prompt_tokens(self, model: ModelState, units: int, messages: int) -> int:
        """Calibrated upper estimate of the real prompt tokens."""
        overhead = self.s.chat_overhead_tokens * (messages + 1)
        return math.ceil(units * self.ratio_upper(model)) + overhead

    def output_reserve(self, template: TemplateState | None, num_predict: int) -> int:
        if num_predict > 0:
            return num_predict
        if template is not None and template.output.total > 0:
            return math.ceil(template.output.quantile(self.s.need_quantile))
        return self.s.output_reserve_tokens

    def expected_output(self, template: TemplateState | None, num_predict: int) -> int:
        """The output tokens a request is expected to produce: its template's median, else the reserve."""
        if template is not None and template.output.total > 0:
            typical = math.ceil(template.output.quantile(0.5))
            return min(typical, num_predict) if num_predict > 0 else typical
        return self.output_reserve(template, num_predict)

    def request_need(self, model: ModelState, template: TemplateState | None, req: Demand) -> int:
        return self.prompt_tokens(model, req.prompt_units, req.message_count) + self.output_reserve(
            template, req.num_predict
        )

    def confidence(self, template: TemplateState | None) -> float:
        if template is None:
            return 0.0
        return template.observations / (template.observations + CONFIDENCE_K)

    def confident(self, template: TemplateState | None) -> bool:
        return template is not None and (template.observations >= self.s.min_observations or template.floor_ctx > 0)

    def template_need(self, template: TemplateState, margin: float | None = None) -> float:
        """Context one template wants: its high need quantile with margin, never below its floor."""
        if template.cached_need < 0:
            template.cached_need = template.need.quantile(self.s.need_quantile) if template.need.total else 0.0
        return max(template.cached_need * (self.s.margin if margin is None else margin), float(template.floor_ctx))

    def active_need(self, model: ModelState) -> int:
        """The largest rung (with margin) a request needed within the claim idle time; 0 = none."""
        return max(
            costs.active_need(model, self.clock, self.s.claim_idle_seconds),
            tentative.active_need(model, self.clock, self.s.claim_idle_seconds),
        )

    def reload_s(self, model: ModelState) -> float:
        return model.reload_cost_s or self.s.reload_cost_prior_seconds

    def others_in_use(self, key: str) -> list[ModelState]:
        """The other models of ``key``'s Ollama host that are loaded, as far as the tuner knows."""
        return list(coreside.others_in_use(self.models, key, self.clock, self.s.keep_alive_seconds))

    def fit_beside(self, key: str, model: ModelState, required: int, wanted: int) -> tuple[int, bool]:
        """(rung, fits): ``wanted`` (a rung), lowered to fit beside the other models in use when the rung
        holding ``required`` tokens (without margin) fits there: beside them as loaded, else beside what
        their active claims need (their next load, after this one evicts them, fits beside it). A need that
        fits neither way, or no bound known, gets ``wanted`` (an eviction is priced like a reload): squeezed
        below it, every step of a growing session would cost a reload."""
        others = self.others_in_use(key)
        limit = coreside.bound(self.host_bounds, model, key)
        if not limit or not others:
            return wanted, False
        rungs = self.rungs(model)
        least = rung_for(required, rungs)
        floors = [min(o.loaded_ctx, max(self.active_need(o), self.rungs(o)[0])) for o in others]
        for contexts in ([o.loaded_ctx for o in others], floors):
            taken = [coreside.size_at(o, ctx) for o, ctx in zip(others, contexts)]
            space = coreside.room(limit, model, taken, rungs)
            if not space:
                return wanted, False
            if least <= space:
                return min(wanted, space), True
        return wanted, False

    # ---- decisions -------------------------------------------------------------------------
    def recommend(self, req: Demand) -> Advice:
        """Decide the options of one request (mutates the believed-loaded state on APPLY)."""
        model = self.models.get(req.model)
        if model is None:
            model = ModelState()  # transient until an APPLY or an outcome makes it known
        if req.default_ctx:
            model.default_ctx = req.default_ctx  # seen by the host before any outcome told the tuner
        model.requests += 1
        if model.evictions and model.requests - model.evictions[-1] > self.s.eviction_window * 10:
            self._forget_evictions(model)
        template = model.templates.pop(req.template_id, None) if req.template_id else None
        if template is not None:
            model.templates[req.template_id] = template  # most recently used last (residency evicts the first)
            template.last_seen = model.requests
        need = self.request_need(model, template, req)
        conf = self.confidence(template)
        believed = self.believed_ctx(model)

        if self.s.respect_client_options and CLIENT_OWNED & req.client_options:
            return Advice(PASSTHROUGH, believed, 0, conf, "client set num_ctx/num_batch itself", "client_set", need)
        if template is not None and template.pinned:
            return self._pinned(model, template, need, conf)
        required = max(need, template.floor_ctx if template is not None else 0)
        rung = rung_for(required * self.margin_for(model), self.rungs(model))
        if required == need and self._prior_based(model, template, req):
            tentative.claim(model, (req.template_id, req.prompt_units, req.message_count), rung, self.clock)
        else:
            costs.claim(model, rung, self.clock)
        if not model.managed:
            return self._unmanaged(req, model, template, need, conf, believed)
        return self._managed(req, model, template, need, conf)

    def _prior_based(self, model: ModelState, template: TemplateState | None, req: Demand) -> bool:
        """Whether the request's need rests on a prior: no measured tokens-per-unit ratio, or no output seen for
        its template (and no num_predict): its claim is tentative until its outcome arrives."""
        no_output = req.num_predict <= 0 and (template is None or template.output.total <= 0)
        return no_output or not self.calibrated(model)

    def _pinned(self, model: ModelState, template: TemplateState, need: int, conf: float) -> Advice:
        rungs = self.rungs(model)
        ctx = template.pin_ctx or self.believed_ctx(model)
        reason = f"pinned num_ctx={template.pin_ctx or 'default'} num_batch={template.pin_batch or 'default'}"
        if ctx < min(need, rungs[-1]):
            ctx = rung_for(need, rungs)
            reason += f"; raised to {ctx}: this request needs {need}"
        template.current_ctx, template.current_batch = ctx, template.pin_batch
        return Advice(APPLY, ctx, template.pin_batch, conf, reason, "pinned", need)

    def _unmanaged(
        self, req: Demand, model: ModelState, template: TemplateState | None, need: int, conf: float, believed: int
    ) -> Advice:
        rungs = self.rungs(model)
        if self.confident(template):
            target = self.fit_beside(req.model, model, need, rung_for(max(need, self.active_need(model)), rungs))[0]
            reason = f"first managed context {target}: covers need {need} (template p{self._pct()})"
            return self._load(req, model, template, target, need, conf, "initial", reason, prevented=need > believed)
        if self.s.truncation_guard and need > believed:
            target = rung_for(need * self.s.margin, rungs)
            reason = f"truncation guard: estimated {need} tokens exceed the context {believed}"
            return self._load(req, model, template, target, need, conf, "grow_truncation_guard", reason, prevented=True)
        code = "no_data" if template is None or template.observations == 0 else "low_confidence"
        return Advice(
            PASSTHROUGH,
            believed,
            0,
            conf,
            f"{code.replace('_', ' ')}: default context {believed} covers estimated {need}",
            code,
            need,
        )

    def _managed(
        self, req: Demand, model: ModelState, template: TemplateState | None, need: int, conf: float
    ) -> Advice:
        rungs = self.rungs(model)
        loaded = model.loaded_ctx
        required = max(need, template.floor_ctx if template is not None else 0)
        wanted = rung_for(required * self.margin_for(model), rungs)
        active = self.active_need(model)
        if model.tight:
            model.tight_floor = max(model.tight_floor, required)
        if model.displaced:
            model.displaced = False  # its next load is this request's: the context is free to choose
            target, fits = self.fit_beside(req.model, model, required, max(wanted, rung_for(active, rungs)))
            if fits and target != loaded:
                reason = (
                    f"co-residence: {loaded} was evicted by another model's load; load {target} "
                    f"(covers need {required}, fits beside the models in use)"
                )
                return self._load(
                    req, model, template, target, need, conf, "co_reside", reason, prevented=required > loaded
                )
        if model.relieve[0]:
            (code, why), model.relieve = model.relieve, ("", "")
            over_cap = 0 < model.batch_cap < model.loaded_batch
            # Only down, and never below a need already seen: else a later request grows it back.
            target = max(rung_for(model.tight_floor, rungs) if code == "co_reside" else loaded, wanted)
            if code == "reset":  # an operator reset a template: what the request and the remaining claims need
                target = max(rung_for(active, rungs), wanted)
            if target < loaded or over_cap:
                reason = f"{why}; load {target} (covers need {required})"
                return self._load(
                    req,
                    model,
                    template,
                    target,
                    need,
                    conf,
                    code,
                    reason,
                    prevented=required > loaded,
                    review_batch=over_cap,
                )
        if required > loaded and loaded < rungs[-1] and required > need and self._runaway(model):
            reason = (
                f"runaway stopped: keep {loaded} (this request's own estimate {need}; its template's "
                f"truncation floor {required} is not followed): {model.runaway}"
            )
            return Advice(APPLY, loaded, model.loaded_batch, conf, reason, "runaway_stopped", need)
        if required > loaded and loaded < rungs[-1]:
            target = self.fit_beside(
                req.model, model, required, self._grow_target(model, need, required, active, rungs)
            )[0]
            code = "grow" if self.confident(template) else "grow_truncation_guard"
            reason = f"grow {loaded} -> {target}: this request needs {required}"
            return self._load(req, model, template, target, need, conf, code, reason, prevented=True)
        # What this request is expected to take at the loaded context: its prompt, and its template's typical
        # output (the reserve, a high quantile, sizes the context, not the expected time) at the decode speed
        # measured there (decode is what a spill slows most).
        coming = self.prompt_tokens(model, req.prompt_units, req.message_count) * model.seconds_per_token.get(
            loaded, 0.0
        ) + self.expected_output(template, req.num_predict) * model.decode_spt.get(loaded, 0.0)
        target, paid = costs.shrink_target(
            model, rungs, wanted, active, self.reload_s(model), self.s.revisit_backoff, coming
        )
        if target:
            reason = (
                f"shrink {loaded} -> {target}: {paid:.1f}s paid at {loaded} since a request last needed more "
                f"than {target}, above the reload cost {self.reload_s(model):.1f}s"
                + (f" x2 (a claim on {active} is still active)" if active > target else "")
            )
            return self._load(req, model, template, target, need, conf, "shrink", reason)
        confident = self.confident(template)  # False without a template
        own = rung_for(self.template_need(template), rungs) if template is not None and confident else loaded
        avoided = own != loaded and confident
        if template is not None:
            template.current_ctx, template.current_batch = loaded, model.loaded_batch
        code = "avoid_reload" if avoided else "keep_loaded"
        reason = f"keep loaded {loaded}: covers need {required}" + (f" (template alone: {own})" if avoided else "")
        return Advice(APPLY, loaded, model.loaded_batch, conf, reason, code, need, reload_avoided=avoided)

    def _runaway(self, model: ModelState) -> bool:
        """Repeated growth that truncation floors drive while the requests' own estimates do not rise: stop it.

        Counted on each such growth; the runaway ends after RUNAWAY_WINDOW x 10 requests without one."""
        if model.runaway and model.requests - model.floor_growths[-1] <= RUNAWAY_WINDOW * 10:
            model.floor_growths[-1] = model.requests  # still pushed: stays stopped
            return True
        model.runaway = ""
        model.floor_growths = [r for r in model.floor_growths if model.requests - r <= RUNAWAY_WINDOW]
        model.floor_growths.append(model.requests)
        if len(model.floor_growths) > RUNAWAY_GROWTHS:
            model.runaway = (
                f"{len(model.floor_growths) - 1} growths in {RUNAWAY_WINDOW} requests driven by "
                "truncation floors above the requests' own estimates (misleading telemetry?)"
            )
            return True
        return False

    def _grow_target(self, model: ModelState, need: int, required: int, active: int, rungs: list[int]) -> int:
        """The rung a growth loads: the request with margin and the active claims that still fit the GPU,
        with headroom up to the largest context that fits; growth a learned floor drives (not the request's
        own estimate) is bounded to ``max_growth`` x the loaded context."""
        margin = self.margin_for(model)
        limit = costs.fit_limit(model)
        cover = active if not limit or active <= limit else 0
        target = rung_for(max(required * margin, cover), rungs)
        if limit:
            roomy = [r for r in rungs if r <= min(required * self.s.grow_headroom, limit)]
            target = max(target, roomy[-1] if roomy else 0)
        if required > need:
            bound = rung_for(max(need * margin, model.loaded_ctx * self.s.max_growth), rungs)
            target = min(target, bound)
        return target

    def _load(
        self,
        req: Demand,
        model: ModelState,
        template: TemplateState | None,
        ctx: int,
        need: int,
        conf: float,
        code: str,
        reason: str,
        prevented: bool = False,
        review_batch: bool = False,
    ) -> Advice:
        """Switch the model to ``ctx``; a reload happens anyway when it differs, so pick num_batch too.

        The first managed load always sends an explicit num_batch (never Ollama's headroom-blind auto
        value); ``review_batch`` re-chooses it without a context change (fixing a spill).
        """
        reload = ctx != self.believed_ctx(model)
        batch = model.loaded_batch
        if reload or review_batch or not model.managed or not batch:
            klass = size_class(self.prompt_tokens(model, req.prompt_units, req.message_count))
            batch = choose_num_batch(model, self.s.num_batch_arms, klass, self.s.safe_num_batch)
            reload = reload or (model.managed and batch != model.loaded_batch)
        if (ctx, batch) != (model.loaded_ctx, model.loaded_batch):
            model.config_loads, model.config_since = 0, model.requests
        if ctx != model.loaded_ctx and costs.note_move(model, model.loaded_ctx, ctx, self.s.revisit_requests):
            reason += f"; {ctx} was left within {self.s.revisit_requests} requests: the next shrink waits longer"
        if model.tight and code not in ("co_reside", "relieve_spill"):
            reason += f"; tight margin {self.margin_for(model):g}: {model.tight}"
        if reload:
            coreside.note_load(model, ctx, self.clock)
        model.managed, model.loaded_ctx, model.loaded_batch = True, ctx, batch
        if self.models.setdefault(req.model, model) is model and not model.confirmed:
            self._bound_unconfirmed(req.model)
        if template is not None:
            template.current_ctx, template.current_batch = ctx, batch
        return Advice(APPLY, ctx, batch, conf, reason, code, need, reload=reload, truncation_prevented=prevented)

    def _bound_unconfirmed(self, keep: str) -> None:
        """Forget the oldest models no outcome has confirmed beyond MAX_UNCONFIRMED_MODELS (names clients
        made up must not grow the tuner's memory)."""
        unconfirmed = [name for name, m in self.models.items() if not m.confirmed and name != keep]
        for name in unconfirmed[: max(0, len(unconfirmed) + 1 - MAX_UNCONFIRMED_MODELS)]:
            del self.models[name]

    def _pct(self) -> str:
        return f"{self.s.need_quantile * 100:g}"

    # ---- learning --------------------------------------------------------------------------
    def observe(self, obs: Observation) -> Learned:
        """Fold one outcome into the state."""
        model = self.models.setdefault(obs.model, ModelState())
        model.confirmed = True
        self.clock = max(self.clock, obs.finished_at)
        # Idle longer than the keep-alive before this request arrived: Ollama had unloaded the model.
        previous = model.used_at
        expired = 0 < previous < obs.finished_at - obs.total_s - self.s.keep_alive_seconds
        model.used_at = max(previous, obs.finished_at)
        reloaded = self._reloaded(model, obs)
        if reloaded:
            model.reloads += 1
            model.reload_cost_s = (
                obs.load_s if not model.reload_cost_s else ((1 - EWMA) * model.reload_cost_s + EWMA * obs.load_s)
            )
            if not expired:
                self._learn_eviction(model, obs, previous)
        self._learn_memory(model, obs)
        if reloaded and model.managed and self._current(model, obs):
            coreside.note_load(model, model.loaded_ctx, obs.finished_at)
            bound = coreside.bound(self.host_bounds, model, obs.model)
            coreside.displace(bound, model, self.others_in_use(obs.model))
        self._learn_context(model, obs)
        reading = read_counts(obs.ollama_version, obs.cached_known, obs.prompt_eval_count, obs.cached_count, reloaded)
        model.count_semantics = reading.semantics
        ctx_known = obs.num_ctx or obs.loaded_context_length or model.default_ctx
        truncated = self.truncated(model, obs, ctx_known, reading)
        ctx_sent = ctx_known or self.default_ctx(model)
        if truncated and self._foreign(model, obs, ctx_sent):
            return Learned(truncated=True, reloaded=reloaded, foreign=True)
        if obs.counts_known and not truncated:
            self._learn_counts(model, obs, ctx_sent, reading)
            if model.managed and self._current(model, obs):
                # What the request would claim again: its prompt (as counted, and as estimated before it ran)
                # and the output the policy reserves.
                template = model.templates.get(obs.template_id) if obs.template_id else None
                prompt = max(reading.prompt_tokens, self.prompt_tokens(model, obs.prompt_units, obs.message_count))
                tokens = prompt + max(obs.eval_count, self.output_reserve(template, obs.num_predict))
                used = rung_for(tokens * self.margin_for(model), self.rungs(model))
                costs.pay_rent(model, self.rungs(model), used, obs.prompt_eval_s + obs.eval_s)
        if obs.gpu_total > 0:
            model.gpu_total, model.gpu_free = obs.gpu_total, max(0, obs.gpu_total - obs.gpu_used)
        if obs.template_id:
            self._learn_template(model, obs, ctx_sent, truncated, reading)
        self._settle(model, obs, truncated, reading)
        return Learned(truncated=truncated, reloaded=reloaded)

    def _settle(self, model: ModelState, obs: Observation, truncated: bool, reading: CountReading) -> None:
        """A tentative claim of this request's shape becomes a claim on what it needs as now known: for a
        template, what the policy would estimate for the same request now (calibration and the template's
        output as learned since: claims and growth decisions rest on the same estimate, so the next such
        request does not undo a shrink the settled claim allowed), never below what the request was measured
        to need; for a prompt that matched no template (whose text becomes one), the measured need. Without a
        measurement (truncated, no counts) it stays as made."""
        measured = 0
        if obs.counts_known and not truncated:
            tokens = self._seen_prompt(model, obs, reading) + obs.eval_count
            template = model.templates.get(obs.template_id) if obs.template_id else None
            if template is not None:
                again = Demand(
                    obs.model, obs.template_id, obs.prompt_units, frozenset(), obs.num_predict, obs.message_count
                )
                tokens = max(tokens, self.request_need(model, template, again), template.floor_ctx)
            measured = rung_for(tokens * self.margin_for(model), self.rungs(model))
        tentative.settle(model, (obs.template_id, obs.prompt_units, obs.message_count), measured, self.clock)

    def _reloaded(self, model: ModelState, obs: Observation) -> bool:
        """Whether Ollama loaded a runner for this request (the one definition: benefit.runner_loaded)."""
        config = (obs.num_ctx, obs.num_batch) if obs.applied else (0, 0)
        changed, model.load_config = config != model.load_config, config
        return runner_loaded(obs.runner_load, obs.load_s, changed, model.reload_cost_s, self.s.reload_threshold_seconds)

    def truncated(
        self, model: ModelState, obs: Observation, ctx_known: int, reading: CountReading | None = None
    ) -> bool:
        """Truncation signals: done_reason 'length' without a cap, or far fewer tokens than sent.

        ``ctx_known`` is the context the request really ran with, 0 when unknown. A count that may leave
        out the cache (``reading``) is a truncation only at the cut signature or when the prompt cannot fit.
        """
        if obs.done_reason == "length" and obs.num_predict == 0:
            return True
        if not obs.counts_known or obs.prompt_units == 0:
            return False
        reading = reading or CountReading("", obs.prompt_eval_count, obs.prompt_eval_count > 0)
        count = reading.prompt_tokens
        low = obs.prompt_units * self.ratio_lower(model)
        if count and count < self.s.truncation_fraction * low:
            if reading.whole:
                return True
            model.evidence_note = f"a low prompt_eval_count ({count}) not read as a truncation: {reading.note}"
        if not ctx_known:
            return False
        if low >= ctx_known:
            return True
        return bool(count) and at_cut(count, ctx_known) and low > count

    def _foreign(self, model: ModelState, obs: Observation, ctx_sent: int) -> bool:
        """A truncation at a context other than the one the model is believed loaded with (options dropped
        by the host, a stale in-flight request, a client's own num_ctx, the cut of the default context):
        it says nothing about the believed context, so nothing is escalated."""
        default = self.default_ctx(model)
        why = ""
        if obs.options_dropped:
            why = "the host dropped the options"
        elif obs.observed_ctx and obs.observed_ctx != ctx_sent:
            why = f"Ollama ran {obs.observed_ctx}, not the {ctx_sent} sent"
        elif model.managed and ctx_sent != model.loaded_ctx:
            why = f"it ran at {ctx_sent} while {model.loaded_ctx} is believed loaded"
        elif obs.applied and default != ctx_sent and at_cut(obs.prompt_eval_count, default):
            why = f"the prompt was cut to half the default context {default}: the options did not reach Ollama"
        if why:
            model.foreign_truncations += 1
            model.evidence_note = f"truncation not escalated: {why}"
        return bool(why)

    def _current(self, model: ModelState, obs: Observation) -> bool:
        """Whether the outcome ran with the options the model is believed to be loaded with."""
        if model.managed:
            return obs.applied and (obs.num_ctx, obs.num_batch) == (model.loaded_ctx, model.loaded_batch)
        return not obs.applied or (obs.num_ctx == 0 and obs.num_batch == 0)

    def _learn_eviction(self, model: ModelState, obs: Observation, previous: float) -> None:
        """A load of unchanged options (after the one that brought them in) means the model was evicted.

        Frequent evictions mean the models sharing the memory do not fit together at their contexts:
        the model switches to the tight margin, at once when managed (it reloads often anyway).
        """
        if not self._current(model, obs):
            return
        model.config_loads += 1
        host = split_key(obs.model)[1]  # only models on the same Ollama host compete for its memory
        others = any(name != obs.model and split_key(name)[1] == host for name in self.models)
        # The grace covers loads the tuner cannot tell apart (in-flight requests with the previous options);
        # the gateway's judgement (runner_load) already tells them apart.
        grace = 0 if obs.runner_load != RUNNER_UNKNOWN else self.s.eviction_grace
        if model.config_loads <= 1 or not others or model.requests - model.config_since <= grace:
            return
        model.evictions = ([*model.evictions, model.requests])[-max(1, self.s.eviction_min) :]
        in_use = self.others_in_use(obs.model)
        coreside.note_eviction(self.host_bounds, obs.model, model, in_use, previous)
        kv = costs.kv_bytes(model)
        for other in in_use:
            if costs.kv_bytes(other) > kv:
                # An eviction is priced like a reload, on the contexts of the models holding more KV memory
                # at which both would fit.
                taken = [coreside.size_at(model, model.loaded_ctx)]
                fits = coreside.room(
                    coreside.bound(self.host_bounds, other, obs.model), other, taken, self.rungs(other)
                )
                costs.pay_eviction(other, self.rungs(other), obs.load_s, fits)
        span = model.requests - model.evictions[0]
        if not model.tight and len(model.evictions) >= self.s.eviction_min and span <= self.s.eviction_window:
            model.tight = (
                f"reloaded {len(model.evictions)} times in {span + 1} requests without an option "
                "change (evicted by other models: the contexts are too large to co-reside)"
            )
        if model.tight and model.managed:
            # Evicted: its next request loads it anyway, so moving to the tight rung now costs nothing extra.
            model.relieve = ("co_reside", f"co-residence: {model.tight}")

    @staticmethod
    def _forget_evictions(model: ModelState) -> None:
        """No eviction for ten windows: the other models left; back to the normal margin (a spill stays)."""
        model.evictions = []
        if model.tight.startswith("reloaded"):
            model.tight, model.tight_floor = "", 0

    def _learn_memory(self, model: ModelState, obs: Observation) -> None:
        """Partial offload (0 < size_vram < size) of the loaded options: a smaller num_batch, then the
        tight margin; at once when the spilled share is large (every request pays), else at the next reload.
        A context far beyond what fits spills whatever the batch or margin: the rent-or-buy rule leaves it."""
        ctx = obs.num_ctx or obs.loaded_context_length
        if obs.model_size <= 0 or 0 < obs.loaded_context_length != ctx:
            return  # /api/ps is read at intervals: figures of a runner at another context are stale
        model.size_bytes, model.vram_bytes = obs.model_size, obs.model_vram
        config = (obs.num_ctx, obs.num_batch)
        if ctx and self._current(model, obs):
            costs.remember_memory(model, (ctx, obs.num_batch), obs.model_size, obs.model_vram)
        if not 0 < obs.model_vram < obs.model_size or not model.managed or not self._current(model, obs):
            return
        limit = costs.fit_limit(model)
        if limit and config[0] > limit * 1.25:
            return
        share = 1 - obs.model_vram / obs.model_size
        what = f"{share:.0%} of the model on the CPU at num_ctx={config[0]} num_batch={config[1]}"
        if config == model.spilled:
            if model.tight and share >= self.s.spill_reload_fraction:
                # Still spilled at the tight margin: move to a lower rung as soon as the need allows one.
                model.relieve = ("relieve_spill", f"spill: {what} at the tight margin")
            return
        model.spilled = config
        lower = [a for a in self.s.num_batch_arms if 0 < a < (config[1] or self.s.safe_num_batch)]
        if lower:
            model.batch_cap = max(lower)
            fix = f"num_batch <= {model.batch_cap}"
        elif not model.tight:
            model.tight = f"spilled ({what})"
            fix = f"tight margin {self.margin_for(model):g}"
        else:
            return  # nothing smaller to try without going below the need
        if share >= self.s.spill_reload_fraction:
            model.relieve = ("relieve_spill", f"spill: {what}; {fix}")

    def _learn_context(self, model: ModelState, obs: Observation) -> None:
        reported = obs.loaded_context_length
        if reported <= 0:
            return
        if obs.num_ctx == 0:
            model.default_ctx = reported
        elif reported < obs.num_ctx:
            model.context_limit = reported  # Ollama clamps an explicit num_ctx to the training context

    def _learn_counts(self, model: ModelState, obs: Observation, ctx_sent: int, reading: CountReading) -> None:
        overhead = self.s.chat_overhead_tokens * (obs.message_count + 1)
        ratio = max(reading.prompt_tokens - overhead, 1) / obs.prompt_units if obs.prompt_units else 0.0
        # A lower bound (a count that may leave out the cache) only ever raises the calibration.
        if ratio and (reading.whole or (reading.prompt_tokens and ratio > self.ratio_upper(model))):
            model.ratio.add(ratio)
            model.calibration_samples += 1
        busy = obs.total_s - obs.load_s
        tokens = obs.prompt_eval_count + obs.eval_count
        if busy > 0:
            model.request_s = busy if not model.request_s else (1 - EWMA) * model.request_s + EWMA * busy
            if tokens > 0:
                old = model.seconds_per_token.get(ctx_sent)
                spt = busy / tokens
                model.seconds_per_token[ctx_sent] = spt if old is None else (1 - EWMA) * old + EWMA * spt
        if obs.eval_count > 1 and obs.eval_s > 0 and self._small_at(model, obs, ctx_sent, reading):
            # Decode slows with the tokens in the context, not only with spill: the speed a rung costs the
            # requests that pay rent there is learned from those (a long request's decode would overstate it).
            old = model.decode_spt.get(ctx_sent)
            spt = obs.eval_s / obs.eval_count
            model.decode_spt[ctx_sent] = spt if old is None else (1 - EWMA) * old + EWMA * spt
        if obs.prompt_eval_count > 0 and obs.prompt_eval_s > 0:
            klass = size_class(obs.prompt_eval_count)
            reward = obs.prompt_eval_count / obs.prompt_eval_s
            model.arms.setdefault((klass, obs.num_batch), ArmStats()).add(reward)
            model.class_tokens[klass] = model.class_tokens.get(klass, 0.0) * 0.999 + obs.prompt_eval_count

    def _small_at(self, model: ModelState, obs: Observation, ctx_sent: int, reading: CountReading) -> bool:
        """Whether the request (its tokens with the normal margin) would have fit half of ``ctx_sent`` (or it ran
        at the smallest rung): one of the requests that pay rent at that context, not one that needed it."""
        tokens = self._seen_prompt(model, obs, reading) + obs.eval_count
        return tokens * self.s.margin <= ctx_sent / 2 or ctx_sent <= self.rungs(model)[0]

    def _seen_prompt(self, model: ModelState, obs: Observation, reading: CountReading) -> int:
        """Prompt tokens to learn a need from: the count when whole, else at least the median estimate."""
        if reading.whole:
            return reading.prompt_tokens
        ratio = model.ratio.quantile(0.5) if self.calibrated(model) else self.s.units_ratio_prior
        overhead = self.s.chat_overhead_tokens * (obs.message_count + 1)
        return max(reading.prompt_tokens, math.ceil(obs.prompt_units * ratio) + overhead)

    def _learn_template(
        self, model: ModelState, obs: Observation, ctx_sent: int, truncated: bool, reading: CountReading
    ) -> None:
        template = model.templates.setdefault(obs.template_id, TemplateState())
        template.observations += 1
        template.cached_need = -1.0
        template.last_seen = max(template.last_seen, model.requests)
        if truncated:
            template.truncations += 1
            above = rung_for(ctx_sent * 2, self.rungs(model))
            safe = template.last_safe_ctx if template.last_safe_ctx > ctx_sent else 0
            template.floor_ctx = max(template.floor_ctx, safe or above)
            if obs.prompt_units:
                estimate = self.prompt_tokens(model, obs.prompt_units, obs.message_count)
                template.need.add(estimate + self.output_reserve(template, obs.num_predict))
            return
        if obs.counts_known:
            template.successes += 1
            template.need.add(self._seen_prompt(model, obs, reading) + obs.eval_count)
            if obs.eval_count > 0:
                template.output.add(obs.eval_count)
            template.last_safe_ctx = ctx_sent
