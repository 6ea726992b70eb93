"""The benefit figures of each folded outcome (definitions in ollama_optimizer/benefit.py), their metrics,
and the KV memory of each model against Ollama's default context.

An outcome is assessed when it is folded and counted in the metrics once its row is stored: a writer that
loses its lock folds the unstored outcomes again later, and their figures must not count twice."""

from __future__ import annotations

import contextlib
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
    """One outcome's benefit, its estimated prompt seconds at the baseline (0 = no estimate), and what the
    metrics count of it once it is stored."""

    benefit: Benefit
    prompt_seconds_baseline: float
    model: str  # the outcome's model name
    key: str  # the model's state key (model and Ollama host)
    optimized: bool
    truncated: bool
    prompt_seconds: float  # measured prompt processing


@dataclass(frozen=True)
class KvMemory:
    """KV-cache bytes of the context loaded now and of Ollama's default context (0 = unknown: the default is
    only assumed, and so is the context of a model the optimizer leaves at it), the two contexts, and the
    default's basis."""

    loaded: int
    default: int
    loaded_ctx: int
    default_ctx: int
    default_basis: str  # default_context.LEARNED, OPERATOR or ASSUMED


def kv_memory(policy: Policy, model: ModelState) -> KvMemory:
    default = policy.default_context(model)
    managed = model.loaded_ctx if model.managed else 0
    per_token = model.kv_bytes_per_token or costs.kv_bytes_per_token(model)
    return KvMemory(
        int((managed or default.known) * per_token),
        int(default.known * per_token),
        managed or default.num_ctx,
        default.num_ctx,
        default.basis,
    )


class Accounting:
    """Assesses folded outcomes in the order the tuner folds them and keeps the per-model metrics."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._ledger = Ledger()
        self._label = BoundedLabel(MAX_MODEL_LABELS)
        self._host = BoundedLabel(MAX_HOST_LABELS)  # "" (the default host) stays "" beside them

    def restart(self) -> None:
        """Forget the previous requests: the learned state was replaced by what is stored (another writer may
        have folded outcomes since, and outcomes folded but not stored are folded again)."""
        self._ledger = Ledger()

    def model_label(self, name: str) -> str:
        """The model label value of ``name`` in the per-model metrics (bounded)."""
        return self._label(name)

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
                default_ctx=self._policy.default_context(model).known,
            ),
        )
        estimate = 0.0
        if obs.applied and benefit.baseline_known and not benefit.baseline_truncated and obs.prompt_eval_s > 0:
            arm = model.arms.get((size_class(prompt), baseline[1]))
            estimate = baseline_prompt_seconds(prompt, arm.mean if arm else 0.0, arm.pulls if arm else 0)
        return Assessed(benefit, estimate, outcome.model, obs.model, obs.applied, learned.truncated, obs.prompt_eval_s)

    def count(self, stored: Assessed) -> None:
        """Count a stored outcome's figures in the metrics."""
        label, benefit = self._label(stored.model), stored.benefit
        metrics.REQUESTS.labels(label, "apply" if stored.optimized else "passthrough").inc()
        if benefit.truncation_prevented:
            metrics.TRUNCATIONS.labels(label, "prevented").inc()
        elif stored.optimized and not benefit.baseline_known:
            metrics.BASELINE_UNKNOWN.labels(label).inc()
        if stored.truncated:
            metrics.TRUNCATIONS.labels(label, "truncated").inc()
        if benefit.cause:
            metrics.RUNNER_LOADS.labels(label, benefit.cause).inc()
        if benefit.baseline_reload:
            metrics.BASELINE_RELOADS.labels(label).inc()
        if stored.prompt_seconds_baseline:
            metrics.PROMPT_SECONDS.labels(label, "measured").inc(stored.prompt_seconds)
            metrics.PROMPT_SECONDS.labels(label, "baseline").inc(stored.prompt_seconds_baseline)
        model = self._policy.models.get(stored.key)
        memory = kv_memory(self._policy, model) if model is not None else None
        if memory is not None and memory.loaded:
            host = split_key(stored.key)[1]
            host = self._host(host) if host else ""
            metrics.KV_BYTES.labels(label, host, "loaded").set(memory.loaded)
            if memory.default:
                metrics.KV_BYTES.labels(label, host, "default").set(memory.default)
            else:  # only assumed: no figure to compare with
                with contextlib.suppress(KeyError):
                    metrics.KV_BYTES.remove(label, host, "default")
