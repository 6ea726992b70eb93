"""Explain: the learned state behind a (model, template) decision, as an ExplainResponse."""

from __future__ import annotations

import time

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from . import costs
from .evidence import UNCACHED, UNKNOWN
from .hosts import split_key
from .limits import Cap, LimitSettings, hard_cap, memory_cap
from .policy import Policy
from .state import ModelState, TemplateState, rung_for

_SEMANTICS = {
    UNKNOWN: "Ollama version unknown: prompt_eval_count read as the whole prompt",
    UNCACHED: "this Ollama counts only uncached prompt tokens: counts are lower bounds, never a truncation "
    "signal or a calibration sample",
}


def _limit_lines(model: ModelState, hard: Cap, soft: Cap) -> list[str]:
    lines = [
        f"model context limit: {model.context_limit or 'unknown'}"
        + (" (trained context, /api/show)" if model.context_limit else "")
    ]
    if hard.value:
        lines.append(f"num_ctx never above {hard.value}: {hard.why}")
    if soft.value:
        lines.append(f"memory cap {soft.value} (never below a request's need): {soft.why}")
    return lines


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def _evidence_lines(model: ModelState) -> list[str]:
    source = (
        f"Ollama {model.ollama_version} (reported {_when(model.version_at)}, kept across restarts)"
        if model.ollama_version
        else "no Ollama version reported"
    )
    semantics = _SEMANTICS.get(model.count_semantics, "prompt_eval_count is the whole prompt")
    lines = [f"telemetry ({source}): {semantics}"]
    if model.evidence_note:
        lines.append(f"last telemetry not taken at face value: {model.evidence_note}")
    if model.foreign_truncations:
        lines.append(
            f"truncations at a context other than the believed one (not escalated): {model.foreign_truncations}"
        )
    return lines


def memory_advice(policy: Policy, model: ModelState) -> str:
    """When the traffic needs more context than fits in VRAM: by how much, and the server settings that help."""
    limit = costs.fit_limit(model)
    need = max(policy.active_need(model), policy.believed_ctx(model))
    if not limit or need <= limit:
        return ""
    return (
        f"traffic needs {need} tokens of context but {limit} fit in VRAM: the rest runs partly on the CPU. "
        "Helps: OLLAMA_KV_CACHE_TYPE=q8_0 (half the KV bytes) or q4_0 (a quarter) with OLLAMA_FLASH_ATTENTION=1, "
        "a GPU with more memory, or a second Ollama host for long sessions"
    )


def _memory_lines(policy: Policy, model: ModelState) -> list[str]:
    """KV bytes per token and the largest context that fits the GPU, and what helps when traffic needs more."""
    per_token = costs.kv_bytes_per_token(model)
    lines = []
    if per_token:
        lines.append(f"KV cache: {per_token / 1024:.0f} KiB per context token (from /api/ps sizes at two contexts)")
    advice = memory_advice(policy, model)
    return [*lines, advice] if advice else lines


def _tentative_lines(model: ModelState) -> list[str]:
    if not model.tentative:
        return []
    top = max(rung for rung, _seen in model.tentative.values())
    return [
        f"{len(model.tentative)} tentative claims (up to {top}): estimated from priors (no measured ratio or "
        "no output seen for the template), each replaced by what its request needed once its outcome arrives"
    ]


def _lines(policy: Policy, model: ModelState, template: TemplateState | None, hard: Cap, soft: Cap) -> list[str]:
    default = policy.default_context(model)
    lines = [
        f"model: managed={model.managed} loaded num_ctx={model.loaded_ctx or 'default'} "
        f"num_batch={model.loaded_batch or 'default'} default context={default.num_ctx} ({default.basis})",
        f"calibration: {policy.ratio_upper(model):.3f} tokens/unit (p{policy.s.calibration_quantile * 100:g}, "
        f"{model.calibration_samples} samples); reload cost {model.reload_cost_s:.2f}s ({model.reloads} seen)",
        f"active need (requests within {policy.s.claim_idle_seconds:g}s, margin {policy.margin_for(model):g}): "
        f"{policy.active_need(model) or 'none'}",
        *_tentative_lines(model),
        *_memory_lines(policy, model),
    ]
    lines += _limit_lines(model, hard, soft) + _evidence_lines(model)
    if model.tight:
        lines.append(f"tight margin: {model.tight}")
    if model.runaway:
        lines.append(
            f"runaway stopped: {model.runaway}; floors are not followed until it subsides "
            "(check the Ollama version's prompt_eval_count, or reset the template)"
        )
    if model.batch_cap:
        lines.append(
            f"num_batch capped at {model.batch_cap}: spilled to the CPU at num_ctx={model.spilled[0]} "
            f"num_batch={model.spilled[1]}"
        )
    if model.size_bytes:
        lines.append(f"loaded size {model.size_bytes / 2**30:.2f} GiB, {model.vram_bytes / 2**30:.2f} GiB in VRAM")
    if template is None:
        lines.append("template: nothing learned")
        return lines
    if template.pinned:
        lines.append(
            f"pinned: num_ctx={template.pin_ctx or 'policy'} num_batch={template.pin_batch or 'default'}"
            " (raised only if a request would otherwise be truncated)"
        )
    elif not policy.confident(template):
        lines.append(
            f"template: {template.observations} observations, below "
            f"{policy.s.min_observations}: follows the model (or passes through)"
        )
    else:
        own = rung_for(policy.template_need(template), policy.rungs(model))
        lines.append(
            f"template alone would take {own}; the model keeps {model.loaded_ctx or 'default'} "
            "while it covers every active template (one reload changes every option)"
        )
    if template.truncations:
        lines.append(f"truncations detected: {template.truncations}; floor raised to {template.floor_ctx}")
    return lines


def explain(
    policy: Policy, key: str, template_id: int, limits: LimitSettings | None = None
) -> tuner_pb2.ExplainResponse:
    """The state behind (model, template) under a state key (hosts.state_key); template 0 = the model."""
    model_name, host = split_key(key)
    model = policy.models.get(key)
    if model is None:
        return tuner_pb2.ExplainResponse(
            model=model_name,
            template_id=template_id,
            known=False,
            ollama_host=host,
            reason="nothing learned for this model",
        )
    limits = limits or LimitSettings()
    hard, soft = hard_cap(key, model, limits), memory_cap(model, limits)
    template = model.templates.get(template_id)
    response = tuner_pb2.ExplainResponse(
        model=model_name,
        template_id=template_id,
        known=template is not None or template_id == 0,
        loaded_num_ctx=model.loaded_ctx,
        loaded_num_batch=model.loaded_batch,
        units_to_tokens_ratio=policy.ratio_upper(model),
        reload_cost_seconds=model.reload_cost_s,
        model_context_limit=model.context_limit,
        num_ctx_cap=hard.value,
        count_semantics=model.count_semantics,
        ollama_host=host,
        reason="\n".join(_lines(policy, model, template, hard, soft)),
    )
    if template is not None:
        response.observations = template.observations
        response.need_p50 = template.need.quantile(0.5)
        response.need_p95 = template.need.quantile(0.95)
        response.need_max = template.need.max_value
        response.current_num_ctx = template.pin_ctx if template.pinned and template.pin_ctx else template.current_ctx
        response.last_safe_num_ctx = template.last_safe_ctx
        response.num_batch = template.pin_batch if template.pinned else template.current_batch
        response.pinned = template.pinned
        response.truncations_detected = template.truncations
        response.confidence = policy.confidence(template)
    return response
