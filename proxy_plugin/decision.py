"""What prepare() decided for one request; carried to observe() to describe the outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, tuner_pb2


@dataclass
class RequestPlan:
    model: str
    endpoint: str  # "chat" | "generate"
    started: float  # time.monotonic() when prepare() began
    action: tuner_pb2.Action = tuner_pb2.PASSTHROUGH
    reason: str = ""  # "applied", or why the request was passed through
    template_id: int = 0
    prompt_units: int = 0
    message_count: int = 0
    num_predict: int = 0
    num_ctx: int = 0  # what the request sent carries (0 = Ollama's default)
    num_batch: int = 0
    client_num_ctx: int = 0  # what the client itself sent (0 = none): the baseline without the optimizer
    client_num_batch: int = 0
    decision_id: str = ""
    fingerprints: matcher_pb2.Fingerprints | None = None
    # What the host knows about its Ollama (gateway: /api/version, /api/show; "" / 0 = unknown).
    ollama_version: str = ""
    context_limit: int = 0
    kv_bytes_per_token: int = 0
    ollama_host: str = ""  # the host label (config ollama_host): the tuner learns per (host, model)
    # A leased request's Recommend, sent off the request path: it sets decision_id when it answers.
    recommending: asyncio.Task[None] | None = None

    @property
    def applied(self) -> bool:
        return self.action == tuner_pb2.APPLY


@dataclass(frozen=True)
class FinishedRequest:
    """One finished request waiting in the telemetry queue."""

    decision: RequestPlan
    stats: dict[str, Any]  # Ollama's final response / final stream chunk (possibly without counts)
    latency_s: float
    ttft_s: float
    finished_at: float  # Unix seconds
    loaded_context_length: int = 0  # Ollama's /api/ps context for the model after a request without num_ctx
    model_size_bytes: int = 0  # /api/ps size and size_vram of the loaded model (0 = unknown)
    model_vram_bytes: int = 0
    runner_load: tuner_pb2.RunnerLoad = tuner_pb2.RUNNER_LOAD_UNKNOWN  # as the gateway judged it
