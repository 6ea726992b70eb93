"""Plugin configuration: ``config.json`` next to this file, overridden by environment variables.

Every key ``k`` is read from ``OPT_<K>``, then from the names the rest of the project uses for the same
setting (``MATCHER_ADDRESS``, ``OPTIMIZER_AUTH_TOKEN``, ``GATEWAY_MAX_BODY_BYTES`` ...), then from the JSON
file (``OPT_CONFIG`` names another one), else its default. ``config.json`` and the README's table are
generated from these declarations (``python -m ollama_optimizer.config_docs``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ollama_optimizer.config import ClientSettings
from ollama_optimizer.settings_env import ConfigError, load, same_as, setting

DEFAULT_PATH = Path(__file__).with_name("config.json")
log = logging.getLogger(__name__)

# Keys earlier versions read, ignored with a warning (an upgrade must not stop a working gateway).
_RETIRED = {
    "source_id": "a client's Reports are named by its per-source token (auth_token, listed in the services' "
    "OPTIMIZER_SOURCE_TOKENS), never by a name it writes",
}
# Keys of earlier releases now defined once for every component (ollama_optimizer/benefit.py): ignored.
RETIRED_KEYS = frozenset({"reload_threshold_s", "truncation_unit_ratio"})


@dataclass(frozen=True)
class PluginConfig:
    """Settings of the core, the agent and the gateway."""

    matcher_address: str = same_as(ClientSettings, "matcher_address", first="OPT_MATCHER_ADDRESS")
    tuner_address: str = same_as(ClientSettings, "tuner_address", first="OPT_TUNER_ADDRESS")
    budget_ms: float = setting(
        50.0, "OPT_BUDGET_MS", "total request-path budget for Match + Recommend", low=1, high=60_000
    )
    call_timeout_ms: float = setting(
        25.0,
        "OPT_CALL_TIMEOUT_MS",
        "deadline of one call (further capped by what is left of the budget)",
        low=1,
        high=60_000,
    )
    breaker_threshold: int = setting(
        5,
        "OPT_BREAKER_THRESHOLD",
        "consecutive failures/timeouts that open a service's breaker (request path and learning calls each have "
        "their own)",
        low=1,
        high=1 << 20,
    )
    breaker_cooldown_s: float = setting(
        10.0, "OPT_BREAKER_COOLDOWN_S", "open → half-open (one probe) after this long", low=0, high=86400
    )
    learning_breaker_cooldown_s: float = setting(
        2.0,
        "OPT_LEARNING_BREAKER_COOLDOWN_S",
        "the same for the learning calls (`Observe`/`Report`): off the request path, so probing sooner costs no "
        "request anything and Reports reach a new tuner writer within seconds of a failover",
        low=0,
        high=86400,
    )
    queue_size: int = setting(
        1000, "OPT_QUEUE_SIZE", "telemetry queue bound; full → drop and count", low=1, high=1 << 24
    )
    batch_size: int = setting(64, "OPT_BATCH_SIZE", "outcomes per `Report` call", low=1, high=10_000)
    offpath_timeout_ms: float = setting(
        2000.0, "OPT_OFFPATH_TIMEOUT_MS", "deadline of `Observe`/`Report` (off the request path)", low=1, high=600_000
    )
    always_on: bool = setting(
        True,
        "OPT_ALWAYS_ON",
        "gateway: optimize every request; `false`: only requests whose last user message (or prompt) starts with "
        "`/opt` (the command is stripped)",
    )
    apply_options: bool = setting(True, "OPT_APPLY_OPTIONS", "`false`: learn only, never change a request")
    respect_client_options: bool = setting(
        True, "OPT_RESPECT_CLIENT_OPTIONS", "never override `num_ctx`/`num_batch` the client set"
    )
    min_confidence: float = setting(
        0.0, "OPT_MIN_CONFIDENCE", "pass through an APPLY whose tuner confidence is below this", low=0, high=1
    )
    sticky_ttl_s: float = setting(
        300.0,
        "OPT_STICKY_TTL_S",
        "on a service failure, re-send the `num_ctx`/`num_batch` the model's last request carried if that request "
        "was this recent (a request without num_ctx would make Ollama reload the runner to its default); 0 = off",
        low=0,
        high=1e9,
    )
    guard_tokens_per_unit: float = setting(
        1.5,
        "OPT_GUARD_TOKENS_PER_UNIT",
        "on a service failure, prompt tokens per matcher unit until the tuner reported the model's own; a prompt "
        "that does not fit the context in effect gets a larger `num_ctx` (0 = no guard)",
        low=0,
        high=100,
    )
    guard_output_tokens: int = setting(
        256,
        "OPT_GUARD_OUTPUT_TOKENS",
        "room for the answer in that check when the client set no `num_predict`",
        low=0,
        high=1 << 24,
    )
    match_memo_size: int = setting(
        10_000,
        "OPT_MATCH_MEMO_SIZE",
        "recent matched Match answers kept by exact Match input (0 = off)",
        low=0,
        high=10_000_000,
    )
    match_memo_ttl_s: float = setting(
        2.0,
        "OPT_MATCH_MEMO_TTL_S",
        "how long such an answer is reused, the matcher's own soft-cache lifetime (0 = off)",
        low=0,
        high=3600,
    )
    leases: bool = setting(
        True,
        "OPT_LEASES",
        "hold the tuner's short per-model leases, so a request they cover needs only Match (its Recommend is sent "
        "off the request path); `false`: every request waits for Recommend",
    )
    max_text_bytes: int = setting(
        1 << 20,
        "OPT_MAX_TEXT_BYTES",
        "canonical text cap (the matcher's); larger → pass through",
        low=1,
        high=64 << 20,
    )
    probes: bool = setting(
        True, "OPT_PROBES", "attach psutil RSS and pynvml GPU memory (when a GPU exists) to telemetry"
    )
    auth_token: str = same_as(ClientSettings, "auth_token", first="OPT_AUTH_TOKEN")
    tls_ca: str = same_as(ClientSettings, "tls_ca", first="OPT_TLS_CA")
    tls_cert: str = same_as(ClientSettings, "tls_cert", first="OPT_TLS_CERT")
    tls_key: str = same_as(ClientSettings, "tls_key", first="OPT_TLS_KEY")
    metrics_port: int = setting(
        0,
        "OPT_METRICS_PORT",
        "agent only: serve `/metrics` on this port (0 = off); the gateway uses `GATEWAY_METRICS_PORT`",
        low=0,
        high=65535,
    )
    max_body_bytes: int = setting(
        0,
        "OPT_MAX_BODY_BYTES",
        "gateway: an operator's chat/generate and `/v1` body limit (413 above; 0 = none, like Ollama)",
        aliases=("GATEWAY_MAX_BODY_BYTES",),
        low=0,
        high=1 << 40,
    )
    optimize_max_body_bytes: int = setting(
        32 << 20,
        "OPT_OPTIMIZE_MAX_BODY_BYTES",
        "gateway: larger chat/generate and `/v1` bodies are relayed untouched (not parsed, not optimized)",
        aliases=("GATEWAY_OPTIMIZE_MAX_BODY_BYTES",),
        low=0,
        high=1 << 40,
    )
    max_model_labels: int = setting(
        50,
        "OPT_MAX_MODEL_LABELS",
        "gateway: distinct `model` label values before `other`",
        aliases=("GATEWAY_MAX_MODEL_LABELS",),
        low=1,
        high=100_000,
    )
    ollama_host: str = setting(
        "",
        "OPT_OLLAMA_HOST",
        "label of the Ollama host (or hardware class) behind this gateway or agent: the tuner learns per "
        "(label, model); empty = the default host",
    )


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> PluginConfig:
    """Defaults <- JSON file <- environment. Unknown JSON keys are an error (typos must not pass)."""
    env = os.environ if env is None else env
    path = path or Path(env.get("OPT_CONFIG") or DEFAULT_PATH)
    data: dict[str, object] = {}
    if path.exists():
        data = json.loads(path.read_text())
        for key in set(data) & set(_RETIRED):
            log.warning("%s: %r is no longer read: %s", path, key, _RETIRED[key])
            del data[key]
        known = {f.name for f in fields(PluginConfig)}
        unknown = set(data) - known - RETIRED_KEYS
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    return load(PluginConfig, env, file_values=data, file_name=str(path))
