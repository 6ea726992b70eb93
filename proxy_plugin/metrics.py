"""Prometheus metrics of the plugin core (``optimizer_plugin_*``) and the gateway (``optimizer_gateway_*``).

One registry for this package, so the gateway's /metrics shows exactly these and nothing collides with
the services' metrics when everything runs in one process (tests, demo).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ollama_optimizer.build_info import register_build_info
from ollama_optimizer.fingerprint_kernel import register_kernel_metric
from ollama_optimizer.labels import BoundedLabel as BoundedLabel  # re-exported for the gateway

REGISTRY = CollectorRegistry(auto_describe=True)
BUILD_INFO = register_build_info(REGISTRY)
register_kernel_metric(REGISTRY)

_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

# --- plugin core -------------------------------------------------------------------------------
DECISIONS = Counter(
    "optimizer_plugin_decisions",
    "Request-path decisions by action (apply | passthrough).",
    ["action"],
    registry=REGISTRY,
)
PASSTHROUGH = Counter(
    "optimizer_plugin_passthrough",
    "Requests passed through unchanged, by reason.",
    ["reason"],
    registry=REGISTRY,
)
STICKY = Counter(
    "optimizer_plugin_sticky",
    "Service failures answered with the runner options the model's last request carried, by reason.",
    ["reason"],
    registry=REGISTRY,
)
GUARDED = Counter(
    "optimizer_plugin_guarded",
    "Service failures whose prompt did not fit the context in effect and got a larger num_ctx, by reason.",
    ["reason"],
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "optimizer_plugin_overhead_seconds",
    "Time prepare() added to a request (Match + Recommend + apply).",
    buckets=_FAST,
    registry=REGISTRY,
)
MATCH_MEMO = Counter(
    "optimizer_plugin_match_memo",
    "Match answers looked up in the plugin's memo by result (hit: the Match round trip was skipped | miss).",
    ["result"],
    registry=REGISTRY,
)
LEASES = Counter(
    "optimizer_plugin_leases",
    "Tuner leases: requests sent by one (used) | asked Recommend on the request path (not_covered); leases "
    "granted | refused | failed (no answer) | revoked (an off-path Recommend answered otherwise).",
    ["result"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "optimizer_plugin_breaker_state",
    "Circuit breaker per service: 0 closed, 1 open, 2 half-open.",
    ["service"],
    registry=REGISTRY,
)
LEARNING_BREAKER_STATE = Gauge(
    "optimizer_plugin_learning_breaker_state",
    "Circuit breaker of the learning calls (Observe, Report) per service: 0 closed, 1 open, 2 half-open. "
    "Separate from the request path's: open, it drops telemetry and never gates Match/Recommend.",
    ["service"],
    registry=REGISTRY,
)
RPC_ERRORS = Counter(
    "optimizer_plugin_rpc_errors",
    "Failed calls to the services, by service, method and gRPC code.",
    ["service", "method", "code"],
    registry=REGISTRY,
)
TELEMETRY_DROPPED = Counter(
    "optimizer_plugin_telemetry_dropped",
    "Telemetry items dropped (queue_full | breaker_open | timeout | rpc_error | refused | error | tuner_full | "
    "rejected); refused = turned down by the service's policy (rate limit, allow-list, token), never counted by "
    "the breaker; tuner_full = dropped at the tuner's full buffer; rejected = invalid telemetry.",
    ["reason"],
    registry=REGISTRY,
)
TELEMETRY_SENT = Counter(
    "optimizer_plugin_telemetry_sent",
    "Telemetry items delivered (observe | report: stored by the tuner | report_buffered: in the tuner's memory only).",
    ["kind"],
    registry=REGISTRY,
)
OPTIONS_FORWARDED = Gauge(
    "optimizer_plugin_host_forwards_options",
    "Agent only: 1 when the host forwards request options to Ollama, 0 when it drops them (learn-only), "
    "-1 when it cannot be told.",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "optimizer_plugin_telemetry_queue_depth",
    "Items waiting in the telemetry queue.",
    registry=REGISTRY,
)

# --- gateway -----------------------------------------------------------------------------------
COMPAT_UNTRANSLATED = Counter(
    "optimizer_gateway_compat_untranslated",
    "Compatible-API requests relayed to Ollama untouched because they are not translated, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "optimizer_gateway_requests",
    "Requests relayed, by endpoint (chat | generate | other) and status code.",
    ["endpoint", "code"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "optimizer_gateway_request_duration_seconds",
    "Client-observed duration of chat/generate requests.",
    ["model", "endpoint", "optimized"],
    buckets=_SLOW,
    registry=REGISTRY,
)
TTFT = Histogram(
    "optimizer_gateway_time_to_first_token_seconds",
    "Time to the first response chunk.",
    ["model", "endpoint"],
    buckets=_SLOW,
    registry=REGISTRY,
)
PROMPT_TOKENS = Counter(
    "optimizer_gateway_prompt_tokens",
    "prompt_eval_count summed per model.",
    ["model"],
    registry=REGISTRY,
)
EVAL_TOKENS = Counter(
    "optimizer_gateway_eval_tokens",
    "eval_count summed per model.",
    ["model"],
    registry=REGISTRY,
)
TOKENS_PER_SECOND = Histogram(
    "optimizer_gateway_tokens_per_second",
    "Ollama-reported speed per request (phase: prompt | eval).",
    ["model", "phase"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
    registry=REGISTRY,
)
RELOADS_SEEN = Counter(
    "optimizer_gateway_reloads_seen",
    "Responses for which Ollama loaded a runner (ollama_optimizer/benefit.py: the part of load_duration beyond "
    "the wait for earlier requests of the model, by Ollama's clock, is at least the reload threshold).",
    ["model"],
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "optimizer_gateway_upstream_errors",
    "Upstream unreachable or failed mid-response (gateway answered 502).",
    ["endpoint"],
    registry=REGISTRY,
)
# Ollama's loaded models as its /api/ps shows them (polled by the gateway after requests, at most every 5 s);
# a model Ollama unloaded loses its series.
LOADED_NUM_CTX = Gauge(
    "optimizer_gateway_loaded_num_ctx",
    "Context length (num_ctx) each loaded model runs with, from /api/ps.",
    ["model"],
    registry=REGISTRY,
)
LOADED_NUM_BATCH = Gauge(
    "optimizer_gateway_loaded_num_batch",
    "num_batch each loaded model runs with as this gateway last sent it (/api/ps does not report num_batch; "
    "0 = Ollama's automatic value).",
    ["model"],
    registry=REGISTRY,
)
LOADED_SIZE = Gauge(
    "optimizer_gateway_loaded_size_bytes",
    "Memory each loaded model takes (weights + KV cache), from /api/ps.",
    ["model"],
    registry=REGISTRY,
)
LOADED_VRAM_SHARE = Gauge(
    "optimizer_gateway_loaded_vram_share",
    "Share of each loaded model in GPU memory (1 = all on the GPU, 0 = CPU only), from /api/ps.",
    ["model"],
    registry=REGISTRY,
)
CLIENT_DISCONNECTS = Counter(
    "optimizer_gateway_client_disconnects",
    "Requests cancelled because the client went away.",
    ["endpoint"],
    registry=REGISTRY,
)
