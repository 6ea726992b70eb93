"""Validation of reported outcomes: each item is accepted or rejected with a reason on its own."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from ollama_optimizer.benefit import RUNNER_UNKNOWN
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from .hosts import MAX_HOST_LEN, state_key, valid_host
from .policy import APPLY, PASSTHROUGH, RUNNER_KEPT, RUNNER_LOADED, Observation

NS = 1e9
MAX_TOKENS = 10_000_000
MAX_DURATION_NS = 86_400 * 10**9  # one day
MAX_OPTION = 16_777_216
MAX_ID_LEN = 128
MAX_MODEL_LEN = 256
# Model names: no control characters or white space (Postgres text cannot hold NUL; logs stay one line).
MODEL_RE = re.compile(rf"[^\x00-\x20\x7f]{{1,{MAX_MODEL_LEN}}}")
DONE_REASONS = frozenset({"", "stop", "length", "load", "unload"})
_NONNEGATIVE = (
    "template_id",
    "prompt_units",
    "message_count",
    "num_ctx",
    "num_batch",
    "num_predict",
    "prompt_eval_count",
    "eval_count",
    "total_duration_ns",
    "load_duration_ns",
    "prompt_eval_duration_ns",
    "eval_duration_ns",
    "host_rss_bytes",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
    "loaded_context_length",
    "model_size_bytes",
    "model_vram_bytes",
    "prompt_eval_cached_count",
    "model_context_limit",
    "observed_num_ctx",
    "kv_bytes_per_token",
    "client_num_ctx",
    "client_num_batch",
)
MAX_VERSION_LEN = 64
_DURATIONS = ("total_duration_ns", "load_duration_ns", "prompt_eval_duration_ns", "eval_duration_ns")


def valid_model(model: str) -> bool:
    """1..MAX_MODEL_LEN characters, none of them control characters or white space."""
    return MODEL_RE.fullmatch(model) is not None


class Invalid(ValueError):
    """An outcome that must not touch learned state; ``rule`` is a bounded metric label."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class Valid:
    observation: Observation
    finished_at: float


def _check_ranges(o: tuner_pb2.Outcome) -> None:
    for name in _NONNEGATIVE:
        if getattr(o, name) < 0:
            raise Invalid("negative", f"{name} is negative")
    for name in ("prompt_eval_count", "eval_count", "prompt_units", "prompt_eval_cached_count"):
        if getattr(o, name) > MAX_TOKENS:
            raise Invalid("absurd", f"{name} above {MAX_TOKENS}")
    for name in _DURATIONS:
        if getattr(o, name) > MAX_DURATION_NS:
            raise Invalid("absurd", f"{name} above one day")
    for name in (
        "num_ctx",
        "num_batch",
        "num_predict",
        "loaded_context_length",
        "model_context_limit",
        "observed_num_ctx",
        "client_num_ctx",
        "client_num_batch",
    ):
        if getattr(o, name) > MAX_OPTION:
            raise Invalid("absurd", f"{name} above {MAX_OPTION}")
    for name in ("latency_seconds", "ttft_seconds", "finished_at"):
        value = getattr(o, name)
        if not math.isfinite(value) or value < 0:
            raise Invalid("not_finite", f"{name} is NaN, infinite or negative")
    if o.latency_seconds > 86_400 or o.ttft_seconds > 86_400:
        raise Invalid("absurd", "latency above one day")
    if o.kv_bytes_per_token > 1 << 30:
        raise Invalid("absurd", "kv_bytes_per_token above 1 GiB")
    if len(o.ollama_version) > MAX_VERSION_LEN or not o.ollama_version.isprintable():
        raise Invalid("bad_version", f"ollama_version must be at most {MAX_VERSION_LEN} printable characters")
    if not valid_host(o.ollama_host):
        raise Invalid(
            "bad_host", f"ollama_host must be at most {MAX_HOST_LEN} characters without control characters or spaces"
        )


def _check_consistency(o: tuner_pb2.Outcome, now: float) -> None:
    if o.total_duration_ns and o.load_duration_ns > o.total_duration_ns:
        raise Invalid("inconsistent", "load_duration_ns exceeds total_duration_ns")
    if o.total_duration_ns and o.prompt_eval_duration_ns + o.eval_duration_ns > o.total_duration_ns * 1.01 + 10**6:
        raise Invalid("inconsistent", "prompt_eval + eval durations exceed total_duration_ns")
    if o.latency_seconds and o.ttft_seconds > o.latency_seconds * 1.01 + 0.001:
        raise Invalid("inconsistent", "ttft_seconds exceeds latency_seconds")
    if o.gpu_memory_total_bytes and o.gpu_memory_used_bytes > o.gpu_memory_total_bytes:
        raise Invalid("inconsistent", "gpu_memory_used_bytes exceeds gpu_memory_total_bytes")
    if o.model_vram_bytes > o.model_size_bytes:
        raise Invalid("inconsistent", "model_vram_bytes exceeds model_size_bytes")
    if o.finished_at > now + 86_400:
        raise Invalid("absurd", "finished_at is more than a day in the future")


def validate(o: tuner_pb2.Outcome, now: float | None = None) -> Valid:
    """Return the outcome as an Observation, or raise Invalid."""
    now = time.time() if now is None else now
    if not o.outcome_id or len(o.outcome_id) > MAX_ID_LEN:
        raise Invalid("bad_id", f"outcome_id must be 1..{MAX_ID_LEN} characters")
    if not valid_model(o.model):
        raise Invalid("bad_model", f"model must be 1..{MAX_MODEL_LEN} characters without control characters or spaces")
    if o.action not in (PASSTHROUGH, APPLY):
        raise Invalid("unknown_action", f"unknown action {o.action}")
    if o.done_reason not in DONE_REASONS:
        raise Invalid("bad_done_reason", f"unknown done_reason {o.done_reason[:32]!r}")
    _check_ranges(o)
    _check_consistency(o, now)
    observation = Observation(
        model=state_key(o.model, o.ollama_host),
        template_id=o.template_id,
        prompt_units=o.prompt_units,
        message_count=o.message_count,
        applied=o.action == APPLY,
        num_ctx=o.num_ctx,
        num_batch=o.num_batch,
        num_predict=o.num_predict,
        prompt_eval_count=o.prompt_eval_count,
        eval_count=o.eval_count,
        total_s=o.total_duration_ns / NS,
        load_s=o.load_duration_ns / NS,
        prompt_eval_s=o.prompt_eval_duration_ns / NS,
        eval_s=o.eval_duration_ns / NS,
        done_reason=o.done_reason,
        counts_known=o.counts_known,
        gpu_used=o.gpu_memory_used_bytes,
        gpu_total=o.gpu_memory_total_bytes,
        loaded_context_length=o.loaded_context_length,
        model_size=o.model_size_bytes,
        model_vram=o.model_vram_bytes,
        finished_at=o.finished_at or now,
        runner_load=o.runner_load if o.runner_load in (RUNNER_KEPT, RUNNER_LOADED) else RUNNER_UNKNOWN,
        cached_count=o.prompt_eval_cached_count,
        cached_known=o.cached_count_known,
        ollama_version=o.ollama_version,
        observed_ctx=o.observed_num_ctx,
        options_dropped=o.options_dropped,
    )
    return Valid(observation, o.finished_at or now)
