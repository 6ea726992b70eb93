"""What the optimizer did to a request, against what Ollama would have done without it.

One definition of each figure, used by the gateway (its runner-load judgement), the tuner (per outcome,
stored, summed by ``ollama-optimizer stats``, exported to Prometheus), the Grafana benefit row and
``make demo``:

- **Runner load** (a reload): Ollama started a runner for the request. The gateway judges it from Ollama's
  clock (``proxy_plugin/runner_loads.py``): the part of ``load_duration`` beyond the wait for earlier
  requests of the model is at least ``ReloadSettings.reload_threshold_seconds``. Without that judgement (the smart-proxy
  agent) a ``load_duration`` of at least the same threshold counts when the options changed from the
  previous request of the model or it is at least half a load measured before (a shorter one is a queue wait).
- **Truncation**: the tuner's judgement of an outcome (``Policy.truncated``: ``done_reason=length``
  without a cap, a prompt count far below the calibrated estimate, or a prompt that cannot fit).
- **Baseline**: the request as its client sent it, to Ollama alone: the client's own ``num_ctx`` /
  ``num_batch``, else Ollama's default context (as the gateway saw it in ``/api/ps`` after a request it sent
  without ``num_ctx``, else the operator's ``TUNER_DEFAULT_NUM_CTX``: ``tuner_service/default_context.py``)
  and its automatic batch. A default only assumed by Ollama's rule is no baseline: the baseline context is
  unknown, and so is every figure that rests on it (truncation prevented, KV memory against the default,
  prompt time at the baseline): never claimed, counted as unknown instead.
- **Truncation prevented**: an optimized request that was not truncated and whose prompt (as Ollama
  counted it) is longer than a known baseline context: Ollama would have cut it.
- **Load the optimizer caused**: a runner load on an optimized request whose options differ from the
  previous request of the model, with no load of another model on the same Ollama host in between (that
  one may have evicted it: the load would have happened anyway). **Load a client would have caused**: in
  the baseline, a request whose options differ from the previous request's (a bare request after an
  explicit one reloads to the default). Other loads (first loads, expiry, eviction) happen with or without
  the optimizer.
- **Prompt time at the baseline**: an optimized request's prompt tokens at the prompt speed Ollama showed
  for the model with its own options (requests passed through, same prompt size class); estimated only
  once that speed has ``MIN_SPEED_SAMPLES`` samples and never for a prevented truncation (the baseline
  would have read a different, cut prompt).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from .settings_env import setting

RUNNER_UNKNOWN, RUNNER_KEPT, RUNNER_LOADED = 0, 1, 2  # Outcome.runner_load
MIN_SPEED_SAMPLES = 3
CAUSES = ("optimizer", "client", "other")  # why a runner was loaded (load_cause 1, 2, 3; 0 = no load)

Options = tuple[int, int]  # (num_ctx, num_batch); 0 = Ollama's own value


@dataclass(frozen=True)
class ReloadSettings:
    """The one runner-load threshold of the gateway, the tuner, ``stats`` and the dashboards."""

    reload_threshold_seconds: float = setting(
        0.1,
        "OPTIMIZER_RELOAD_THRESHOLD_SECONDS",
        "the one reload threshold (gateway, tuner, `stats`, dashboards): a load of at least this long beyond the "
        "wait for earlier requests of the model (judged from Ollama's clock) is a runner load",
        low=0.001,
        high=3600,
    )


def runner_loaded(
    judged: int, load_s: float, options_changed: bool, measured_load_s: float, threshold_s: float
) -> bool:
    """Whether Ollama loaded a runner for a request (``judged``: the gateway's RUNNER_KEPT/RUNNER_LOADED)."""
    if judged != RUNNER_UNKNOWN:
        return judged == RUNNER_LOADED
    if load_s < threshold_s:
        return False
    return options_changed or load_s >= measured_load_s / 2


def auto_num_batch(num_ctx: int) -> int:
    """Ollama's automatic num_batch for a context (server/sched.go, v0.30+)."""
    return 2048 if num_ctx > 32768 else 1024 if num_ctx > 4096 else 512


@dataclass(frozen=True)
class BenefitInput:
    """One outcome as the benefit figures see it."""

    optimized: bool
    sent: Options  # what Ollama got
    baseline: Options  # what the client sent
    loaded: bool  # a runner load (runner_loaded)
    truncated: bool  # the tuner's judgement
    prompt_tokens: int  # prompt_eval_count (0 = unknown)
    default_ctx: int  # Ollama's default context for the model, learned or the operator's (0 = unknown)


@dataclass(frozen=True)
class Benefit:
    baseline_ctx: int  # the context Ollama would have used (0 = unknown: only assumed)
    baseline_truncated: bool  # its prompt is longer than that context
    truncation_prevented: bool
    load_cause: int  # 0 = no load, else 1 + CAUSES.index(cause)
    baseline_reload: bool  # the client's own options would have made Ollama reload

    @property
    def baseline_known(self) -> bool:
        return self.baseline_ctx > 0

    @property
    def cause(self) -> str:
        return CAUSES[self.load_cause - 1] if self.load_cause else ""


class Ledger:
    """Per model (and Ollama host): the options of the previous request, as sent and as in the baseline, and
    the host's load count then."""

    def __init__(self, max_models: int = 4096) -> None:
        self._max = max_models
        self._previous: OrderedDict[str, tuple[Options, Options, int]] = OrderedDict()
        self._host_loads: Counter[str] = Counter()

    def assess(self, key: str, host: str, r: BenefitInput) -> Benefit:
        """``key``: the model on its host; ``host``: the host, whose models compete for its memory."""
        previous = self._previous.pop(key, None)
        loads_before = self._host_loads[host]
        if r.loaded:
            self._host_loads[host] += 1
        self._previous[key] = (r.sent, r.baseline, self._host_loads[host])
        while len(self._previous) > self._max:
            self._previous.popitem(last=False)
        baseline_ctx = r.baseline[0] or r.default_ctx
        over = bool(baseline_ctx) and r.prompt_tokens > baseline_ctx
        changed = previous is not None and previous[0] != r.sent
        others_loaded = previous is not None and loads_before > previous[2]
        cause = 0
        if r.loaded:
            cause = 3 if others_loaded or not changed else 1 if r.optimized else 2
        return Benefit(
            baseline_ctx=baseline_ctx,
            baseline_truncated=over,
            truncation_prevented=r.optimized and over and not r.truncated,
            load_cause=cause,
            baseline_reload=previous is not None and previous[1] != r.baseline,
        )


def baseline_prompt_seconds(prompt_tokens: int, baseline_speed: float, samples: int) -> float:
    """Estimated prompt-processing seconds at the baseline speed (tokens/s); 0 = no estimate."""
    if prompt_tokens <= 0 or baseline_speed <= 0 or samples < MIN_SPEED_SAMPLES:
        return 0.0
    return prompt_tokens / baseline_speed
