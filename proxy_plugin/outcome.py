"""Outcome messages (tuner.proto) from a decision and Ollama's final response."""

from __future__ import annotations

import uuid
from typing import Any

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from .decision import FinishedRequest
from .probes import MemoryFigures

_COUNTS = ("prompt_eval_count", "eval_count")
_DURATIONS = {
    "total_duration": "total_duration_ns",
    "load_duration": "load_duration_ns",
    "prompt_eval_duration": "prompt_eval_duration_ns",
    "eval_duration": "eval_duration_ns",
}


def stat_int(stats: dict[str, Any], key: str) -> int:
    """A non-negative integer field of Ollama's response; 0 when absent or malformed."""
    value = stats.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return 0
    return min(int(value), 2**63 - 1)


def counts_known(stats: dict[str, Any]) -> bool:
    return any(key in stats for key in (*_COUNTS, *_DURATIONS))


def build_outcome(item: FinishedRequest, memory: MemoryFigures) -> tuner_pb2.Outcome:
    d, stats = item.decision, item.stats
    known = counts_known(stats)
    done_reason = stats.get("done_reason")
    outcome = tuner_pb2.Outcome(
        outcome_id=uuid.uuid4().hex,
        decision_id=d.decision_id,
        model=d.model,
        template_id=d.template_id,
        prompt_units=d.prompt_units,
        message_count=d.message_count,
        action=d.action,
        num_ctx=d.num_ctx,
        num_batch=d.num_batch,
        client_num_ctx=d.client_num_ctx,
        client_num_batch=d.client_num_batch,
        num_predict=d.num_predict,
        done_reason=done_reason if done_reason in ("stop", "length") else "",
        counts_known=known,
        latency_seconds=max(item.latency_s, 0.0),
        ttft_seconds=max(item.ttft_s, 0.0),
        host_rss_bytes=memory.host_rss_bytes,
        gpu_memory_used_bytes=memory.gpu_memory_used_bytes,
        gpu_memory_total_bytes=memory.gpu_memory_total_bytes,
        finished_at=item.finished_at,
        loaded_context_length=item.loaded_context_length,
        model_size_bytes=item.model_size_bytes,
        model_vram_bytes=item.model_vram_bytes,
        runner_load=item.runner_load,
        ollama_version=d.ollama_version,
        model_context_limit=d.context_limit,
        kv_bytes_per_token=d.kv_bytes_per_token,
        ollama_host=d.ollama_host,
    )
    if known:
        outcome.prompt_eval_count = stat_int(stats, "prompt_eval_count")
        outcome.eval_count = stat_int(stats, "eval_count")
        if "prompt_eval_cached_count" in stats:  # Ollama with PR 17943: the cached part of the prompt total
            outcome.cached_count_known = True
            outcome.prompt_eval_cached_count = stat_int(stats, "prompt_eval_cached_count")
        for source, field in _DURATIONS.items():
            setattr(outcome, field, stat_int(stats, source))
    return outcome
