"""Per-model request metrics the gateway records from Ollama's final response (Ollama has no /metrics)."""

from __future__ import annotations

from typing import Any

from . import metrics
from .config import PluginConfig
from .decision import RequestPlan
from .outcome import stat_int


class RequestMetrics:
    def __init__(self, cfg: PluginConfig) -> None:
        self._cfg = cfg
        self._model = metrics.BoundedLabel(cfg.max_model_labels)

    def record(
        self,
        decision: RequestPlan,
        final: dict[str, Any] | None,
        latency_s: float,
        ttft_s: float | None,
        runner_loaded: bool = False,
    ) -> None:
        model = self._model(decision.model)
        endpoint = decision.endpoint
        metrics.DURATION.labels(model, endpoint, str(decision.applied).lower()).observe(latency_s)
        if ttft_s is not None:
            metrics.TTFT.labels(model, endpoint).observe(ttft_s)
        if final is None:
            return
        prompt, evals = stat_int(final, "prompt_eval_count"), stat_int(final, "eval_count")
        metrics.PROMPT_TOKENS.labels(model).inc(prompt)
        metrics.EVAL_TOKENS.labels(model).inc(evals)
        for phase, count, duration_ns in (
            ("prompt", prompt, stat_int(final, "prompt_eval_duration")),
            ("eval", evals, stat_int(final, "eval_duration")),
        ):
            if count and duration_ns:
                metrics.TOKENS_PER_SECOND.labels(model, phase).observe(count / (duration_ns / 1e9))
        if runner_loaded:
            metrics.RELOADS_SEEN.labels(model).inc()
