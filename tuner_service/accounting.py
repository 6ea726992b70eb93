"""The benefit figures of each folded outcome (definitions in ollama_optimizer/benefit.py), their metrics,
and the KV memory of each model against Ollama's default context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ollama_optimizer.benefit import Benefit, BenefitInput, Ledger, baseline_prompt_seconds
from ollama_optimizer.labels import BoundedLabel

from . import costs, metrics
from .hosts import split_key
from .policy import Learned, Observation, Policy
from .state import ModelState, size_class

MAX_MODEL_LABELS = 50
MAX_HOST_LABELS = 32  # Ollama host label values in metrics before "other"


@dataclass(frozen=True)
class Assessed:
    """One outcome's benefit and its estimated prompt seconds at the baseline (0 = no estimate)."""

    benefit: Benefit
    prompt_seconds_baseline: float


@dataclass(frozen=True)
class KvMemory:
    """KV-cache bytes of the context loaded now and of Ollama's default context (0 = unknown)."""

    loaded: int
    default: int
    loaded_ctx: int
    default_ctx: int


def known_default_ctx(policy: Policy, model: ModelState) -> int:
    """Ollama's default context for the model as the gateway saw it (/api/ps after a request without num_ctx),
    else the operator's TUNER_DEFAULT_NUM_CTX; 0 = unknown (every request so far carried a num_ctx): the
    policy's assumed default is a guess it may act on, never a baseline to claim a benefit against."""
    return model.default_ctx or policy.s.default_num_ctx


def kv_memory(policy: Policy, model: ModelState) -> KvMemory:
    default_ctx = known_default_ctx(policy, model)
    loaded_ctx = model.loaded_ctx if model.managed and model.loaded_ctx else default_ctx
    per_token = model.kv_bytes_per_token or costs.kv_bytes_per_token(model)
    return KvMemory(int(loaded_ctx * per_token), int(default_ctx * per_token), loaded_ctx, default_ctx)


class Accounting:
    """Assesses folded outcomes in the order the tuner folds them and keeps the per-model metrics."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._ledger = Ledger()
        self._label = BoundedLabel(MAX_MODEL_LABELS)
        self._host = BoundedLabel(MAX_HOST_LABELS)  # "" (the default host) stays "" beside them

    def assess(self, outcome: Any, obs: Observation, learned: Learned) -> Assessed:
        """``outcome``: the Outcome message behind ``obs`` (validated), folded into the policy just now."""
        model = self._policy.models[obs.model]
        sent = (outcome.num_ctx, outcome.num_batch)
        baseline = (outcome.client_num_ctx, outcome.client_num_batch) if obs.applied else sent
        prompt = outcome.prompt_eval_count if obs.counts_known else 0
        benefit = self._ledger.assess(
            obs.model,
            split_key(obs.model)[1],
            BenefitInput(
                optimized=obs.applied,
                sent=sent,
                baseline=baseline,
                loaded=learned.reloaded,
                truncated=learned.truncated,
                prompt_tokens=prompt,
                default_ctx=known_default_ctx(self._policy, model),
            ),
        )
        estimate = 0.0
        if obs.applied and not benefit.baseline_truncated and obs.prompt_eval_s > 0:
            arm = model.arms.get((size_class(prompt), baseline[1]))
            estimate = baseline_prompt_seconds(prompt, arm.mean if arm else 0.0, arm.pulls if arm else 0)
        self._count(outcome.model, obs, learned, model, benefit, estimate)
        return Assessed(benefit, estimate)

    def _count(
        self, name: str, obs: Observation, learned: Learned, model: ModelState, benefit: Benefit, estimate: float
    ) -> None:
        label = self._label(name)
        metrics.REQUESTS.labels(label, "apply" if obs.applied else "passthrough").inc()
        if benefit.truncation_prevented:
            metrics.TRUNCATIONS.labels(label, "prevented").inc()
        if learned.truncated:
            metrics.TRUNCATIONS.labels(label, "truncated").inc()
        if benefit.cause:
            metrics.RUNNER_LOADS.labels(label, benefit.cause).inc()
        if benefit.baseline_reload:
            metrics.BASELINE_RELOADS.labels(label).inc()
        if estimate:
            metrics.PROMPT_SECONDS.labels(label, "measured").inc(obs.prompt_eval_s)
            metrics.PROMPT_SECONDS.labels(label, "baseline").inc(estimate)
        memory = kv_memory(self._policy, model)
        if memory.default:
            host = split_key(obs.model)[1]
            host = self._host(host) if host else ""
            metrics.KV_BYTES.labels(label, host, "loaded").set(memory.loaded)
            metrics.KV_BYTES.labels(label, host, "default").set(memory.default)
