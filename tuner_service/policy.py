"""The tuner's decision policy: pure functions over in-memory state, no I/O, no clock.

num_ctx is decided per model (one loaded runner serves every template of a model):
keep the loaded context while it covers the request, grow at once when it would not,
shrink only when a sustained saving outweighs the measured reload cost. Once a model
is managed every request for it carries the same explicit options, because a request
without num_ctx after an explicit one makes Ollama reload to its default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .bandit import choose_num_batch
from .evidence import UNCACHED, CountReading, at_cut, read_counts
from .hosts import split_key
from .settings import PolicySettings
from .state import ArmStats, ModelState, TemplateState, ladder, rung_for, size_class

PASSTHROUGH = 1
APPLY = 2
CLIENT_OWNED = frozenset({"num_ctx", "num_batch"})
CONFIDENCE_K = 3.0  # confidence = n / (n + K)
MAX_UNCONFIRMED_MODELS = 256  # models known from Recommend alone (no outcome, pin or stored row yet)
EWMA = 0.1
# Assumed share of request time saved per halving of the context when no speeds are measured.
SHRINK_PRIOR_GAIN = 0.02

REASON_CODES = ("client_set", "no_data", "low_confidence", "pinned", "initial", "grow",
                "grow_truncation_guard", "shrink", "keep_loaded", "avoid_reload", "relieve_spill", "co_reside")


@dataclass(frozen=True)
class Request:
    model: str
    template_id: int = 0
    prompt_units: int = 0
    client_options: frozenset[str] = frozenset()
    num_predict: int = 0
    message_count: int = 0


@dataclass(frozen=True)
class Decision:
    action: int
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
    model_size: int = 0   # /api/ps size and size_vram (bytes, 0 = unknown); vram < size = partial offload
    model_vram: int = 0
    cached_count: int = 0        # prompt_eval_cached_count, meaningful when cached_known
    cached_known: bool = False
    ollama_version: str = ""     # "" = unknown: how prompt_eval_count was counted (evidence.py)
    observed_ctx: int = 0        # context Ollama reported after the request (0 = unknown)
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

    # ---- estimates -------------------------------------------------------------------------
    def rungs(self, model: ModelState) -> list[int]:
        return ladder(self.s.ladder_min, self.s.ladder_max, model.num_ctx_cap or model.context_limit,
                      self.s.ladder_steps, self.s.ladder_rungs)

    def margin_for(self, model: ModelState) -> float:
        """The tight margin once the model must share memory (evicted or spilled), else the normal one."""
        return min(self.s.tight_margin, self.s.margin) if model.tight else self.s.margin

    def default_ctx(self, model: ModelState) -> int:
        return model.default_ctx or self.s.default_num_ctx

    def believed_ctx(self, model: ModelState) -> int:
        """The context the model runs with now, as far as the tuner knows."""
        return model.loaded_ctx if model.managed and model.loaded_ctx else self.default_ctx(model)

    def calibrated(self, model: ModelState) -> bool:
        """Enough samples for the measured upper ratio; where counts may leave out the cache only loads give
        samples (a cold cache), so one suffices."""
        need = 1 if model.count_semantics == UNCACHED else self.s.calibration_min_samples
        return model.calibration_samples >= need

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

    def request_need(self, model: ModelState, template: TemplateState | None, req: Request) -> int:
        return self.prompt_tokens(model, req.prompt_units, req.message_count) + self.output_reserve(
            template, req.num_predict)

    def confidence(self, template: TemplateState | None) -> float:
        if template is None:
            return 0.0
        return template.observations / (template.observations + CONFIDENCE_K)

    def confident(self, template: TemplateState | None) -> bool:
        return template is not None and (template.observations >= self.s.min_observations
                                         or template.floor_ctx > 0)

    def template_need(self, template: TemplateState, margin: float | None = None) -> float:
        """Context one template wants: its high need quantile with margin, never below its floor."""
        if template.cached_need < 0:
            template.cached_need = template.need.quantile(self.s.need_quantile) if template.need.total else 0.0
        return max(template.cached_need * (self.s.margin if margin is None else margin), float(template.floor_ctx))

    def model_need(self, model: ModelState) -> float:
        """The largest need among the model's active, unpinned templates seen at least once.

        Templates still below min_observations count too: one reload then covers them all.
        """
        horizon = model.requests - self.s.template_idle_requests
        margin = self.margin_for(model)
        return max((self.template_need(t, margin) for t in model.templates.values()
                    if not t.pinned and (t.observations or t.floor_ctx) and t.last_seen >= horizon), default=0.0)

    def seen_need(self, model: ModelState) -> float:
        """The largest need any active, unpinned template has shown (no margin), or a request since tight."""
        horizon = model.requests - self.s.template_idle_requests
        return max([float(model.tight_floor)] + [t.need.max_value for t in model.templates.values()
                                                 if not t.pinned and t.last_seen >= horizon])

    # ---- decisions -------------------------------------------------------------------------
    def recommend(self, req: Request) -> Decision:
        """Decide the options of one request (mutates the believed-loaded state on APPLY)."""
        model = self.models.get(req.model)
        if model is None:
            model = ModelState()  # transient until an APPLY or an outcome makes it known
        model.requests += 1
        if model.evictions and model.requests - model.evictions[-1] > self.s.eviction_window * 10:
            self._forget_evictions(model)
        template = model.templates.get(req.template_id) if req.template_id else None
        if template is not None:
            template.last_seen = model.requests
        need = self.request_need(model, template, req)
        conf = self.confidence(template)
        believed = self.believed_ctx(model)

        if self.s.respect_client_options and CLIENT_OWNED & req.client_options:
            return Decision(PASSTHROUGH, believed, 0, conf, "client set num_ctx/num_batch itself",
                            "client_set", need)
        if template is not None and template.pinned:
            return self._pinned(model, template, need, conf)
        if not model.managed:
            return self._unmanaged(req, model, template, need, conf, believed)
        return self._managed(req, model, template, need, conf)

    def _pinned(self, model: ModelState, template: TemplateState, need: int, conf: float) -> Decision:
        rungs = self.rungs(model)
        ctx = template.pin_ctx or self.believed_ctx(model)
        reason = f"pinned num_ctx={template.pin_ctx or 'default'} num_batch={template.pin_batch or 'default'}"
        if ctx < min(need, rungs[-1]):
            ctx = rung_for(need, rungs)
            reason += f"; raised to {ctx}: this request needs {need}"
        template.current_ctx, template.current_batch = ctx, template.pin_batch
        return Decision(APPLY, ctx, template.pin_batch, conf, reason, "pinned", need)

    def _unmanaged(self, req: Request, model: ModelState, template: TemplateState | None, need: int,
                   conf: float, believed: int) -> Decision:
        rungs = self.rungs(model)
        if self.confident(template):
            target = rung_for(max(need, self.model_need(model)), rungs)
            reason = f"first managed context {target}: covers need {need} (template p{self._pct()})"
            return self._load(req, model, template, target, need, conf, "initial", reason,
                              prevented=need > believed)
        if self.s.truncation_guard and need > believed:
            target = rung_for(need * self.s.margin, rungs)
            reason = f"truncation guard: estimated {need} tokens exceed the context {believed}"
            return self._load(req, model, template, target, need, conf, "grow_truncation_guard", reason,
                              prevented=True)
        code = "no_data" if template is None or template.observations == 0 else "low_confidence"
        return Decision(PASSTHROUGH, believed, 0, conf, f"{code.replace('_', ' ')}: default context "
                        f"{believed} covers estimated {need}", code, need)

    def _managed(self, req: Request, model: ModelState, template: TemplateState | None, need: int,
                 conf: float) -> Decision:
        rungs = self.rungs(model)
        loaded = model.loaded_ctx
        required = max(need, template.floor_ctx if template is not None else 0)
        wanted = max(required, self.model_need(model))
        if model.tight:
            model.tight_floor = max(model.tight_floor, required)
        if model.relieve[0]:
            (code, why), model.relieve = model.relieve, ("", "")
            over_cap = 0 < model.batch_cap < model.loaded_batch
            if code == "co_reside":
                # Only down, and never below a need already seen: else a later request grows it back.
                target = rung_for(max(wanted, self.seen_need(model)), rungs)
                move = target < loaded
            else:
                target = rung_for(wanted, rungs)
                move = target != loaded or over_cap
            if move:
                reason = f"{why}; load {target} (covers need {required})"
                return self._load(req, model, template, target, need, conf, code, reason,
                                  prevented=required > loaded, review_batch=over_cap)
        if required > loaded and loaded < rungs[-1]:
            # The margin on this request too: else the next slightly larger one grows again.
            target = rung_for(max(wanted, required * self.margin_for(model)), rungs)
            code = "grow" if self.confident(template) else "grow_truncation_guard"
            reason = f"grow {loaded} -> {target}: this request needs {required}"
            return self._load(req, model, template, target, need, conf, code, reason, prevented=True)
        desired = rung_for(wanted, rungs)
        model.fit_streak = model.fit_streak + 1 if desired * 2 <= loaded else 0
        if model.fit_streak >= self.s.shrink_min_requests and self._shrink_pays(model, desired):
            reason = f"shrink {loaded} -> {desired}: {model.fit_streak} requests fit, worth a reload"
            return self._load(req, model, template, desired, need, conf, "shrink", reason)
        own = rung_for(self.template_need(template), rungs) if self.confident(template) else loaded
        avoided = template is not None and own != loaded and self.confident(template)
        if template is not None:
            template.current_ctx, template.current_batch = loaded, model.loaded_batch
        code = "avoid_reload" if avoided else "keep_loaded"
        reason = f"keep loaded {loaded}: covers need {required}" + (f" (template alone: {own})" if avoided else "")
        return Decision(APPLY, loaded, model.loaded_batch, conf, reason, code, need, reload_avoided=avoided)

    def _load(self, req: Request, model: ModelState, template: TemplateState | None, ctx: int, need: int,
              conf: float, code: str, reason: str, prevented: bool = False, review_batch: bool = False) -> Decision:
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
        if model.tight and code not in ("co_reside", "relieve_spill"):
            reason += f"; tight margin {self.margin_for(model):g}: {model.tight}"
        model.managed, model.loaded_ctx, model.loaded_batch, model.fit_streak = True, ctx, batch, 0
        if self.models.setdefault(req.model, model) is model and not model.confirmed:
            self._bound_unconfirmed(req.model)
        if template is not None:
            template.current_ctx, template.current_batch = ctx, batch
        return Decision(APPLY, ctx, batch, conf, reason, code, need, reload=reload,
                        truncation_prevented=prevented)

    def _bound_unconfirmed(self, keep: str) -> None:
        """Forget the oldest models no outcome has confirmed beyond MAX_UNCONFIRMED_MODELS (names clients
        made up must not grow the tuner's memory)."""
        unconfirmed = [name for name, m in self.models.items() if not m.confirmed and name != keep]
        for name in unconfirmed[: max(0, len(unconfirmed) + 1 - MAX_UNCONFIRMED_MODELS)]:
            del self.models[name]

    def _shrink_pays(self, model: ModelState, desired: int) -> bool:
        """Saving over the next ``shrink_min_requests`` requests beats ``payback`` reload costs."""
        loaded = model.loaded_ctx
        fast, slow = model.seconds_per_token.get(desired), model.seconds_per_token.get(loaded)
        if fast is not None and slow is not None and model.request_s > 0:
            per_request = max(0.0, (slow - fast) / slow) * model.request_s
        else:
            per_request = model.request_s * SHRINK_PRIOR_GAIN * math.log2(loaded / desired)
        cost = model.reload_cost_s or self.s.reload_cost_prior_seconds
        return per_request * self.s.shrink_min_requests > self.s.shrink_payback * cost

    def _pct(self) -> str:
        return f"{self.s.need_quantile * 100:g}"

    # ---- learning --------------------------------------------------------------------------
    def observe(self, obs: Observation) -> Learned:
        """Fold one outcome into the state."""
        model = self.models.setdefault(obs.model, ModelState())
        model.confirmed = True
        reloaded = obs.load_s >= self.s.reload_threshold_seconds
        if reloaded:
            model.reloads += 1
            model.reload_cost_s = obs.load_s if not model.reload_cost_s else (
                (1 - EWMA) * model.reload_cost_s + EWMA * obs.load_s)
            self._learn_eviction(model, obs)
        self._learn_memory(model, obs)
        self._learn_context(model, obs)
        reading = read_counts(obs.ollama_version, obs.cached_known, obs.prompt_eval_count, obs.cached_count,
                              reloaded)
        model.count_semantics = reading.semantics
        ctx_known = obs.num_ctx or obs.loaded_context_length or model.default_ctx
        truncated = self.truncated(model, obs, ctx_known, reading)
        ctx_sent = ctx_known or self.default_ctx(model)
        if truncated and self._foreign(model, obs, ctx_sent):
            return Learned(truncated=True, reloaded=reloaded, foreign=True)
        if obs.counts_known and not truncated:
            self._learn_counts(model, obs, ctx_sent, reading)
        if obs.gpu_total > 0:
            model.gpu_total, model.gpu_free = obs.gpu_total, max(0, obs.gpu_total - obs.gpu_used)
        if obs.template_id:
            self._learn_template(model, obs, ctx_sent, truncated, reading)
        return Learned(truncated=truncated, reloaded=reloaded)

    def truncated(self, model: ModelState, obs: Observation, ctx_known: int,
                  reading: CountReading | None = None) -> bool:
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

    def _learn_eviction(self, model: ModelState, obs: Observation) -> None:
        """A load of unchanged options (after the one that brought them in) means the model was evicted.

        Frequent evictions mean the models sharing the memory do not fit together at their contexts:
        the model switches to the tight margin, at once when managed (it reloads often anyway).
        """
        if not self._current(model, obs):
            return
        model.config_loads += 1
        host = split_key(obs.model)[1]  # only models on the same Ollama host compete for its memory
        others = any(name != obs.model and split_key(name)[1] == host for name in self.models)
        if model.config_loads <= 1 or not others or model.requests - model.config_since <= self.s.eviction_grace:
            return
        model.evictions = (model.evictions + [model.requests])[-max(1, self.s.eviction_min):]
        span = model.requests - model.evictions[0]
        if not model.tight and len(model.evictions) >= self.s.eviction_min and span <= self.s.eviction_window:
            model.tight = (f"reloaded {len(model.evictions)} times in {span + 1} requests without an option "
                           "change (evicted by other models: the contexts are too large to co-reside)")
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
        tight margin; at once when the spilled share is large (every request pays), else at the next reload."""
        if obs.model_size <= 0:
            return
        model.size_bytes, model.vram_bytes = obs.model_size, obs.model_vram
        config = (obs.num_ctx, obs.num_batch)
        if not 0 < obs.model_vram < obs.model_size or not model.managed or not self._current(model, obs):
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
        if obs.prompt_eval_count > 0 and obs.prompt_eval_s > 0:
            klass = size_class(obs.prompt_eval_count)
            reward = obs.prompt_eval_count / obs.prompt_eval_s
            model.arms.setdefault((klass, obs.num_batch), ArmStats()).add(reward)
            model.class_tokens[klass] = model.class_tokens.get(klass, 0.0) * 0.999 + obs.prompt_eval_count

    def _seen_prompt(self, model: ModelState, obs: Observation, reading: CountReading) -> int:
        """Prompt tokens to learn a need from: the count when whole, else at least the median estimate."""
        if reading.whole:
            return reading.prompt_tokens
        ratio = (model.ratio.quantile(0.5) if self.calibrated(model)
                 else self.s.units_ratio_prior)
        overhead = self.s.chat_overhead_tokens * (obs.message_count + 1)
        return max(reading.prompt_tokens, math.ceil(obs.prompt_units * ratio) + overhead)

    def _learn_template(self, model: ModelState, obs: Observation, ctx_sent: int, truncated: bool,
                        reading: CountReading) -> None:
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

