from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    PASSTHROUGH: _ClassVar[Action]
    APPLY: _ClassVar[Action]

class RunnerLoad(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNNER_LOAD_UNKNOWN: _ClassVar[RunnerLoad]
    RUNNER_KEPT: _ClassVar[RunnerLoad]
    RUNNER_LOADED: _ClassVar[RunnerLoad]
ACTION_UNSPECIFIED: Action
PASSTHROUGH: Action
APPLY: Action
RUNNER_LOAD_UNKNOWN: RunnerLoad
RUNNER_KEPT: RunnerLoad
RUNNER_LOADED: RunnerLoad

class RecommendRequest(_message.Message):
    __slots__ = ("model", "template_id", "prompt_units", "client_options", "num_predict", "message_count", "model_context_limit", "kv_bytes_per_token", "ollama_host", "default_num_ctx")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_UNITS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_PREDICT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONTEXT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    model: str
    template_id: int
    prompt_units: int
    client_options: _containers.RepeatedScalarFieldContainer[str]
    num_predict: int
    message_count: int
    model_context_limit: int
    kv_bytes_per_token: int
    ollama_host: str
    default_num_ctx: int
    def __init__(self, model: _Optional[str] = ..., template_id: _Optional[int] = ..., prompt_units: _Optional[int] = ..., client_options: _Optional[_Iterable[str]] = ..., num_predict: _Optional[int] = ..., message_count: _Optional[int] = ..., model_context_limit: _Optional[int] = ..., kv_bytes_per_token: _Optional[int] = ..., ollama_host: _Optional[str] = ..., default_num_ctx: _Optional[int] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("action", "num_ctx", "num_batch", "decision_id", "confidence", "reason", "reason_code", "estimated_need", "units_to_tokens_ratio", "num_ctx_cap")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_NEED_FIELD_NUMBER: _ClassVar[int]
    UNITS_TO_TOKENS_RATIO_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_CAP_FIELD_NUMBER: _ClassVar[int]
    action: Action
    num_ctx: int
    num_batch: int
    decision_id: str
    confidence: float
    reason: str
    reason_code: str
    estimated_need: int
    units_to_tokens_ratio: float
    num_ctx_cap: int
    def __init__(self, action: _Optional[_Union[Action, str]] = ..., num_ctx: _Optional[int] = ..., num_batch: _Optional[int] = ..., decision_id: _Optional[str] = ..., confidence: _Optional[float] = ..., reason: _Optional[str] = ..., reason_code: _Optional[str] = ..., estimated_need: _Optional[int] = ..., units_to_tokens_ratio: _Optional[float] = ..., num_ctx_cap: _Optional[int] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("model", "ollama_host")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    model: str
    ollama_host: str
    def __init__(self, model: _Optional[str] = ..., ollama_host: _Optional[str] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("granted", "num_ctx", "num_batch", "ttl_ms", "units_to_tokens_ratio", "overhead_tokens_per_message", "rules", "num_ctx_cap", "reason_code")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    UNITS_TO_TOKENS_RATIO_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_TOKENS_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_CAP_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    num_ctx: int
    num_batch: int
    ttl_ms: int
    units_to_tokens_ratio: float
    overhead_tokens_per_message: int
    rules: _containers.RepeatedCompositeFieldContainer[LeaseRule]
    num_ctx_cap: int
    reason_code: str
    def __init__(self, granted: _Optional[bool] = ..., num_ctx: _Optional[int] = ..., num_batch: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., units_to_tokens_ratio: _Optional[float] = ..., overhead_tokens_per_message: _Optional[int] = ..., rules: _Optional[_Iterable[_Union[LeaseRule, _Mapping]]] = ..., num_ctx_cap: _Optional[int] = ..., reason_code: _Optional[str] = ...) -> None: ...

class LeaseRule(_message.Message):
    __slots__ = ("template_id", "output_tokens", "floor_ctx", "confidence")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FLOOR_CTX_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    template_id: int
    output_tokens: int
    floor_ctx: int
    confidence: float
    def __init__(self, template_id: _Optional[int] = ..., output_tokens: _Optional[int] = ..., floor_ctx: _Optional[int] = ..., confidence: _Optional[float] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("outcome_id", "decision_id", "model", "template_id", "prompt_units", "message_count", "action", "num_ctx", "num_batch", "num_predict", "prompt_eval_count", "eval_count", "total_duration_ns", "load_duration_ns", "prompt_eval_duration_ns", "eval_duration_ns", "done_reason", "counts_known", "latency_seconds", "ttft_seconds", "host_rss_bytes", "gpu_memory_used_bytes", "gpu_memory_total_bytes", "finished_at", "loaded_context_length", "model_size_bytes", "model_vram_bytes", "runner_load", "prompt_eval_cached_count", "cached_count_known", "ollama_version", "model_context_limit", "observed_num_ctx", "options_dropped", "ollama_host", "kv_bytes_per_token", "client_num_ctx", "client_num_batch")
    OUTCOME_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_UNITS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    NUM_PREDICT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_EVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    LOAD_DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_EVAL_DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    EVAL_DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    DONE_REASON_FIELD_NUMBER: _ClassVar[int]
    COUNTS_KNOWN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TTFT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOST_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    LOADED_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNER_LOAD_FIELD_NUMBER: _ClassVar[int]
    PROMPT_EVAL_CACHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CACHED_COUNT_KNOWN_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONTEXT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    outcome_id: str
    decision_id: str
    model: str
    template_id: int
    prompt_units: int
    message_count: int
    action: Action
    num_ctx: int
    num_batch: int
    num_predict: int
    prompt_eval_count: int
    eval_count: int
    total_duration_ns: int
    load_duration_ns: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    done_reason: str
    counts_known: bool
    latency_seconds: float
    ttft_seconds: float
    host_rss_bytes: int
    gpu_memory_used_bytes: int
    gpu_memory_total_bytes: int
    finished_at: float
    loaded_context_length: int
    model_size_bytes: int
    model_vram_bytes: int
    runner_load: RunnerLoad
    prompt_eval_cached_count: int
    cached_count_known: bool
    ollama_version: str
    model_context_limit: int
    observed_num_ctx: int
    options_dropped: bool
    ollama_host: str
    kv_bytes_per_token: int
    client_num_ctx: int
    client_num_batch: int
    def __init__(self, outcome_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., model: _Optional[str] = ..., template_id: _Optional[int] = ..., prompt_units: _Optional[int] = ..., message_count: _Optional[int] = ..., action: _Optional[_Union[Action, str]] = ..., num_ctx: _Optional[int] = ..., num_batch: _Optional[int] = ..., num_predict: _Optional[int] = ..., prompt_eval_count: _Optional[int] = ..., eval_count: _Optional[int] = ..., total_duration_ns: _Optional[int] = ..., load_duration_ns: _Optional[int] = ..., prompt_eval_duration_ns: _Optional[int] = ..., eval_duration_ns: _Optional[int] = ..., done_reason: _Optional[str] = ..., counts_known: _Optional[bool] = ..., latency_seconds: _Optional[float] = ..., ttft_seconds: _Optional[float] = ..., host_rss_bytes: _Optional[int] = ..., gpu_memory_used_bytes: _Optional[int] = ..., gpu_memory_total_bytes: _Optional[int] = ..., finished_at: _Optional[float] = ..., loaded_context_length: _Optional[int] = ..., model_size_bytes: _Optional[int] = ..., model_vram_bytes: _Optional[int] = ..., runner_load: _Optional[_Union[RunnerLoad, str]] = ..., prompt_eval_cached_count: _Optional[int] = ..., cached_count_known: _Optional[bool] = ..., ollama_version: _Optional[str] = ..., model_context_limit: _Optional[int] = ..., observed_num_ctx: _Optional[int] = ..., options_dropped: _Optional[bool] = ..., ollama_host: _Optional[str] = ..., kv_bytes_per_token: _Optional[int] = ..., client_num_ctx: _Optional[int] = ..., client_num_batch: _Optional[int] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected", "stored", "buffered", "dropped", "buffered_index", "dropped_index", "duplicate_index")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_INDEX_FIELD_NUMBER: _ClassVar[int]
    DROPPED_INDEX_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_INDEX_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    stored: int
    buffered: int
    dropped: int
    buffered_index: _containers.RepeatedScalarFieldContainer[int]
    dropped_index: _containers.RepeatedScalarFieldContainer[int]
    duplicate_index: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., stored: _Optional[int] = ..., buffered: _Optional[int] = ..., dropped: _Optional[int] = ..., buffered_index: _Optional[_Iterable[int]] = ..., dropped_index: _Optional[_Iterable[int]] = ..., duplicate_index: _Optional[_Iterable[int]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "template_id", "ollama_host")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    model: str
    template_id: int
    ollama_host: str
    def __init__(self, model: _Optional[str] = ..., template_id: _Optional[int] = ..., ollama_host: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model", "template_id", "known", "observations", "need_p50", "need_p95", "need_max", "current_num_ctx", "last_safe_num_ctx", "num_batch", "pinned", "truncations_detected", "loaded_num_ctx", "loaded_num_batch", "units_to_tokens_ratio", "reload_cost_seconds", "model_context_limit", "confidence", "reason", "num_ctx_cap", "count_semantics", "ollama_host")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    NEED_P50_FIELD_NUMBER: _ClassVar[int]
    NEED_P95_FIELD_NUMBER: _ClassVar[int]
    NEED_MAX_FIELD_NUMBER: _ClassVar[int]
    CURRENT_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    LAST_SAFE_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATIONS_DETECTED_FIELD_NUMBER: _ClassVar[int]
    LOADED_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    LOADED_NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    UNITS_TO_TOKENS_RATIO_FIELD_NUMBER: _ClassVar[int]
    RELOAD_COST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONTEXT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_CAP_FIELD_NUMBER: _ClassVar[int]
    COUNT_SEMANTICS_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    model: str
    template_id: int
    known: bool
    observations: int
    need_p50: float
    need_p95: float
    need_max: float
    current_num_ctx: int
    last_safe_num_ctx: int
    num_batch: int
    pinned: bool
    truncations_detected: int
    loaded_num_ctx: int
    loaded_num_batch: int
    units_to_tokens_ratio: float
    reload_cost_seconds: float
    model_context_limit: int
    confidence: float
    reason: str
    num_ctx_cap: int
    count_semantics: str
    ollama_host: str
    def __init__(self, model: _Optional[str] = ..., template_id: _Optional[int] = ..., known: _Optional[bool] = ..., observations: _Optional[int] = ..., need_p50: _Optional[float] = ..., need_p95: _Optional[float] = ..., need_max: _Optional[float] = ..., current_num_ctx: _Optional[int] = ..., last_safe_num_ctx: _Optional[int] = ..., num_batch: _Optional[int] = ..., pinned: _Optional[bool] = ..., truncations_detected: _Optional[int] = ..., loaded_num_ctx: _Optional[int] = ..., loaded_num_batch: _Optional[int] = ..., units_to_tokens_ratio: _Optional[float] = ..., reload_cost_seconds: _Optional[float] = ..., model_context_limit: _Optional[int] = ..., confidence: _Optional[float] = ..., reason: _Optional[str] = ..., num_ctx_cap: _Optional[int] = ..., count_semantics: _Optional[str] = ..., ollama_host: _Optional[str] = ...) -> None: ...

class PinRequest(_message.Message):
    __slots__ = ("model", "template_id", "num_ctx", "num_batch", "ollama_host")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    model: str
    template_id: int
    num_ctx: int
    num_batch: int
    ollama_host: str
    def __init__(self, model: _Optional[str] = ..., template_id: _Optional[int] = ..., num_ctx: _Optional[int] = ..., num_batch: _Optional[int] = ..., ollama_host: _Optional[str] = ...) -> None: ...

class PinResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ExplainResponse
    def __init__(self, state: _Optional[_Union[ExplainResponse, _Mapping]] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("model", "template_id", "ollama_host", "whole_model")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    WHOLE_MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    template_id: int
    ollama_host: str
    whole_model: bool
    def __init__(self, model: _Optional[str] = ..., template_id: _Optional[int] = ..., ollama_host: _Optional[str] = ..., whole_model: _Optional[bool] = ...) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class SummaryRequest(_message.Message):
    __slots__ = ("period_seconds", "model")
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    period_seconds: int
    model: str
    def __init__(self, period_seconds: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class SummaryResponse(_message.Message):
    __slots__ = ("period_seconds", "requests", "optimized", "optimized_share", "match_rate", "latency_p50_optimized_seconds", "latency_p50_passthrough_seconds", "kv_tokens_saved", "truncations_prevented", "truncations_detected", "reloads_caused", "reloads_avoided", "models", "benefit")
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZED_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZED_SHARE_FIELD_NUMBER: _ClassVar[int]
    MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_OPTIMIZED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_PASSTHROUGH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KV_TOKENS_SAVED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATIONS_PREVENTED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATIONS_DETECTED_FIELD_NUMBER: _ClassVar[int]
    RELOADS_CAUSED_FIELD_NUMBER: _ClassVar[int]
    RELOADS_AVOIDED_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    BENEFIT_FIELD_NUMBER: _ClassVar[int]
    period_seconds: int
    requests: int
    optimized: int
    optimized_share: float
    match_rate: float
    latency_p50_optimized_seconds: float
    latency_p50_passthrough_seconds: float
    kv_tokens_saved: int
    truncations_prevented: int
    truncations_detected: int
    reloads_caused: int
    reloads_avoided: int
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    benefit: Benefit
    def __init__(self, period_seconds: _Optional[int] = ..., requests: _Optional[int] = ..., optimized: _Optional[int] = ..., optimized_share: _Optional[float] = ..., match_rate: _Optional[float] = ..., latency_p50_optimized_seconds: _Optional[float] = ..., latency_p50_passthrough_seconds: _Optional[float] = ..., kv_tokens_saved: _Optional[int] = ..., truncations_prevented: _Optional[int] = ..., truncations_detected: _Optional[int] = ..., reloads_caused: _Optional[int] = ..., reloads_avoided: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ..., benefit: _Optional[_Union[Benefit, _Mapping]] = ...) -> None: ...

class Benefit(_message.Message):
    __slots__ = ("requests", "optimized", "truncations_prevented", "truncated", "runner_loads", "loads_by_optimizer", "loads_by_clients_baseline", "latency_p50_optimized_seconds", "latency_p95_optimized_seconds", "latency_p50_passthrough_seconds", "latency_p95_passthrough_seconds", "prompt_seconds", "prompt_seconds_baseline", "prompt_estimated_requests", "kv_bytes_loaded", "kv_bytes_default", "default_num_ctx", "loaded_num_ctx", "default_num_ctx_basis", "baseline_unknown_requests")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATIONS_PREVENTED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    RUNNER_LOADS_FIELD_NUMBER: _ClassVar[int]
    LOADS_BY_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LOADS_BY_CLIENTS_BASELINE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_OPTIMIZED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_OPTIMIZED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_PASSTHROUGH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_PASSTHROUGH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SECONDS_BASELINE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ESTIMATED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_LOADED_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    LOADED_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NUM_CTX_BASIS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_UNKNOWN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    optimized: int
    truncations_prevented: int
    truncated: int
    runner_loads: int
    loads_by_optimizer: int
    loads_by_clients_baseline: int
    latency_p50_optimized_seconds: float
    latency_p95_optimized_seconds: float
    latency_p50_passthrough_seconds: float
    latency_p95_passthrough_seconds: float
    prompt_seconds: float
    prompt_seconds_baseline: float
    prompt_estimated_requests: int
    kv_bytes_loaded: int
    kv_bytes_default: int
    default_num_ctx: int
    loaded_num_ctx: int
    default_num_ctx_basis: str
    baseline_unknown_requests: int
    def __init__(self, requests: _Optional[int] = ..., optimized: _Optional[int] = ..., truncations_prevented: _Optional[int] = ..., truncated: _Optional[int] = ..., runner_loads: _Optional[int] = ..., loads_by_optimizer: _Optional[int] = ..., loads_by_clients_baseline: _Optional[int] = ..., latency_p50_optimized_seconds: _Optional[float] = ..., latency_p95_optimized_seconds: _Optional[float] = ..., latency_p50_passthrough_seconds: _Optional[float] = ..., latency_p95_passthrough_seconds: _Optional[float] = ..., prompt_seconds: _Optional[float] = ..., prompt_seconds_baseline: _Optional[float] = ..., prompt_estimated_requests: _Optional[int] = ..., kv_bytes_loaded: _Optional[int] = ..., kv_bytes_default: _Optional[int] = ..., default_num_ctx: _Optional[int] = ..., loaded_num_ctx: _Optional[int] = ..., default_num_ctx_basis: _Optional[str] = ..., baseline_unknown_requests: _Optional[int] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("model", "requests", "optimized", "loaded_num_ctx", "loaded_num_batch", "reloads", "memory_advice", "ollama_host", "num_ctx_cap", "benefit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZED_FIELD_NUMBER: _ClassVar[int]
    LOADED_NUM_CTX_FIELD_NUMBER: _ClassVar[int]
    LOADED_NUM_BATCH_FIELD_NUMBER: _ClassVar[int]
    RELOADS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ADVICE_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_HOST_FIELD_NUMBER: _ClassVar[int]
    NUM_CTX_CAP_FIELD_NUMBER: _ClassVar[int]
    BENEFIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    requests: int
    optimized: int
    loaded_num_ctx: int
    loaded_num_batch: int
    reloads: int
    memory_advice: str
    ollama_host: str
    num_ctx_cap: int
    benefit: Benefit
    def __init__(self, model: _Optional[str] = ..., requests: _Optional[int] = ..., optimized: _Optional[int] = ..., loaded_num_ctx: _Optional[int] = ..., loaded_num_batch: _Optional[int] = ..., reloads: _Optional[int] = ..., memory_advice: _Optional[str] = ..., ollama_host: _Optional[str] = ..., num_ctx_cap: _Optional[int] = ..., benefit: _Optional[_Union[Benefit, _Mapping]] = ...) -> None: ...
