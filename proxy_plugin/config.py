"""Plugin configuration: ``config.json`` next to this file, overridden by environment variables.

Every key ``k`` can be overridden by ``OPT_<K>``; gateway-only keys also by ``GATEWAY_<K>``; a few keys
honour the names the rest of the project uses (``MATCHER_ADDRESS``, ``OPTIMIZER_AUTH_TOKEN`` ...).
``OPT_CONFIG`` names another JSON file. The README lists every key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).with_name("config.json")
log = logging.getLogger(__name__)

# Extra environment names per key, tried after OPT_<KEY>, in order.
_ALIASES: dict[str, tuple[str, ...]] = {
    "matcher_address": ("MATCHER_ADDRESS",),
    "tuner_address": ("TUNER_ADDRESS",),
    "auth_token": ("OPTIMIZER_AUTH_TOKEN",),
    "tls_ca": ("OPTIMIZER_CLIENT_TLS_CA",),
    "tls_cert": ("OPTIMIZER_CLIENT_TLS_CERT",),
    "tls_key": ("OPTIMIZER_CLIENT_TLS_KEY",),
    "max_body_bytes": ("GATEWAY_MAX_BODY_BYTES",),
    "optimize_max_body_bytes": ("GATEWAY_OPTIMIZE_MAX_BODY_BYTES",),
    "max_model_labels": ("GATEWAY_MAX_MODEL_LABELS",),
}
# Keys earlier versions read, ignored with a warning (an upgrade must not stop a working gateway).
_RETIRED = {
    "source_id": "a client's Reports are named by its per-source token (auth_token, listed in the services' "
    "OPTIMIZER_SOURCE_TOKENS), never by a name it writes",
}
# Keys of earlier releases now defined once for every component (ollama_optimizer/benefit.py): ignored.
RETIRED_KEYS = frozenset({"reload_threshold_s", "truncation_unit_ratio"})


@dataclass(frozen=True)
class PluginConfig:
    """Settings of the core, the agent and the gateway (defaults mirror config.json)."""

    matcher_address: str = "127.0.0.1:50061"
    tuner_address: str = "127.0.0.1:50062"
    budget_ms: float = 50.0  # whole request-path budget (Match + Recommend)
    call_timeout_ms: float = 25.0  # deadline of one call, further capped by what is left of the budget
    breaker_threshold: int = 5  # consecutive failures/timeouts that open a service's breaker
    breaker_cooldown_s: float = 10.0  # open -> half-open after this long
    learning_breaker_cooldown_s: float = 2.0  # the same for Observe/Report (a new tuner writer is found sooner)
    queue_size: int = 1000  # telemetry queue bound; a full queue drops (and counts)
    batch_size: int = 64  # outcomes per Report call
    offpath_timeout_ms: float = 2000.0  # deadline of Observe/Report calls (off the request path)
    always_on: bool = True  # False: only requests starting with the /opt command are optimized
    apply_options: bool = True  # False: learn only, never change a request (e.g. an unpatched smart-proxy)
    respect_client_options: bool = True  # never override num_ctx/num_batch the client set
    min_confidence: float = 0.0  # APPLY below this tuner confidence is passed through
    # When a service fails (timeout, error, open breaker), re-send the options last applied to that model
    # instead of none: a request without num_ctx would make Ollama reload the runner to its default (and
    # maybe truncate), then the next optimized request reload again. 0 disables it.
    sticky_ttl_s: float = 300.0  # how long last-applied options stay valid (Ollama's keep_alive default)
    # When a service fails, a prompt that visibly does not fit the context in effect gets a larger num_ctx
    # (context_guard.py): its tokens per matcher unit until the tuner reported the model's (0 = no guard),
    # and the room kept for the answer when the client set no num_predict.
    guard_tokens_per_unit: float = 1.5
    guard_output_tokens: int = 256
    # Reuse a recent matched Match answer for a text whose Match input (windows and the tokens inside the
    # largest) is identical: one round trip instead of two on the request path. 0 disables either.
    match_memo_size: int = 10_000
    match_memo_ttl_s: float = 2.0  # the matcher's own soft-cache lifetime (MATCHER_CACHE_TTL_SECONDS)
    max_text_bytes: int = 1 << 20  # canonical text cap (the matcher's); larger -> pass through
    probes: bool = True  # attach psutil / pynvml memory figures to telemetry
    auth_token: str = ""  # bearer token; a per-source one (OPTIMIZER_SOURCE_TOKENS) also names this client's Reports
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    metrics_port: int = 0  # agent only: serve /metrics on this port (0 = off); the gateway uses GATEWAY_METRICS_PORT
    max_body_bytes: int = 0  # gateway: an operator's chat/generate and /v1 body limit (413 above); 0 = none, as Ollama
    optimize_max_body_bytes: int = 32 << 20  # gateway: larger chat/generate and /v1 bodies are relayed untouched
    max_model_labels: int = 50  # gateway: distinct model label values before "other"
    # Label of the Ollama host (or hardware class) behind this host: the tuner learns per (label, model).
    # "" = the default host (one Ollama behind every gateway).
    ollama_host: str = ""


def _coerce(raw: Any, like: Any, name: str) -> Any:
    if isinstance(like, bool):
        if isinstance(raw, bool):
            return raw
        lowered = str(raw).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be a boolean, got {raw!r}")
    try:
        return type(like)(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {type(like).__name__}, got {raw!r}") from None


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> PluginConfig:
    """Defaults <- JSON file <- environment. Unknown JSON keys are an error (typos must not pass)."""
    env = os.environ if env is None else env
    path = path or Path(env.get("OPT_CONFIG") or DEFAULT_PATH)
    base = PluginConfig()
    values: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
        for key in set(data) & set(_RETIRED):
            log.warning("%s: %r is no longer read: %s", path, key, _RETIRED[key])
            del data[key]
        known = {f.name for f in fields(PluginConfig)}
        unknown = set(data) - known - RETIRED_KEYS
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        values.update((key, value) for key, value in data.items() if key in known)
    for f in fields(PluginConfig):
        for name in (f"OPT_{f.name.upper()}", *_ALIASES.get(f.name, ())):
            if env.get(name):
                values[f.name] = env[name]
                break
    coerced = {k: _coerce(v, getattr(base, k), k) for k, v in values.items()}
    return replace(base, **coerced)
