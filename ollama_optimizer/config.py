"""The settings every component shares: database, gRPC servers, addresses clients dial, the gateway process.

Each key is declared once with ``settings_env.setting``; ``load(cls, os.environ)`` at a command's entry
point reads it. The README's configuration tables are generated from these declarations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .settings_env import check, load, same_as, setting
from .source_tokens import SourceTokens

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StartupError(RuntimeError):
    """A service cannot start (a dependency unreachable or refusing, an address in use): the CLI
    logs the message, without a traceback, and exits 1."""


@dataclass(frozen=True)
class DatabaseConfig:
    """Where Postgres is. An empty DSN means: start an embedded Postgres in data_dir."""

    dsn: str = setting(
        "", "OPTIMIZER_DSN", "Postgres DSN; empty starts an embedded Postgres (pgserver) in `OPTIMIZER_DATA_DIR`"
    )
    data_dir: Path = setting(
        PROJECT_ROOT / ".data" / "pg",
        "OPTIMIZER_DATA_DIR",
        "data directory of the embedded Postgres",
        shown_default=".data/pg",
    )
    embedded_shared_buffers_mb: int = setting(
        0,
        "OPTIMIZER_EMBEDDED_SHARED_BUFFERS_MB",
        "`shared_buffers` of the embedded Postgres (the matcher's block indexes grow with the templates; "
        "Postgres's own default is 128); 0 = a quarter of the RAM, 128-1024",
        low=0,
        high=1 << 20,
    )
    pool_min: int = setting(2, "OPTIMIZER_DB_POOL_MIN", "smallest connection pool per service", low=1, high=1000)
    pool_max: int = setting(10, "OPTIMIZER_DB_POOL_MAX", "largest connection pool per service", low=1, high=1000)
    connect_timeout_seconds: float = setting(
        60.0,
        "OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS",
        "start-up (services, `migrate`, `up`) waits this long for a configured Postgres not reachable yet "
        "(refused, no socket, starting up), retrying with backoff, gRPC health NOT_SERVING meanwhile, then "
        "exits 1; a bad password or unknown database exits 1 at once; `0` = one attempt",
        low=0,
        high=86400,
    )
    migrate_on_start: bool = setting(
        False,
        "OPTIMIZER_MIGRATE_ON_START",
        "a matcher or tuner applies the expand migrations at start; otherwise it waits (NOT_SERVING, up to "
        "`OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS`) for `ollama-optimizer migrate` (`up` migrates itself)",
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class ListenSettings:
    """Where the matcher and tuner serve gRPC and Prometheus metrics (metrics on the listen host)."""

    matcher_listen: str = setting("127.0.0.1:50061", "MATCHER_LISTEN", "matcher gRPC address")
    matcher_metrics_port: int = setting(9461, "MATCHER_METRICS_PORT", "matcher Prometheus port", low=0, high=65535)
    tuner_listen: str = setting("127.0.0.1:50062", "TUNER_LISTEN", "tuner gRPC address")
    tuner_metrics_port: int = setting(9462, "TUNER_METRICS_PORT", "tuner Prometheus port", low=0, high=65535)


@dataclass(frozen=True)
class ServerConfig:
    """One gRPC service: listen address, metrics port, limits, optional auth."""

    listen: str
    metrics_port: int
    max_concurrent_rpcs: int = setting(
        256,
        "OPTIMIZER_MAX_CONCURRENT_RPCS",
        "load shedding: RPCs beyond this get RESOURCE_EXHAUSTED",
        low=1,
        high=1 << 20,
    )
    max_concurrent_learning_rpcs: int = setting(
        64,
        "OPTIMIZER_MAX_CONCURRENT_LEARNING_RPCS",
        "of those, at most this many `Observe`/`Report` at once (always fewer than the limit above); more get "
        "RESOURCE_EXHAUSTED at once, so stalled learning never takes the slots of `Match`/`Recommend`",
        low=0,
        high=1 << 20,
    )
    grace_seconds: float = setting(
        5.0,
        "OPTIMIZER_SHUTDOWN_GRACE_SECONDS",
        "drain time after SIGTERM (health goes NOT_SERVING first)",
        low=0,
        high=3600,
    )
    auth_token: str = setting(
        "",
        "OPTIMIZER_AUTH_TOKEN",
        "when set: services require `authorization: Bearer <token>` (health/reflection stay open); clients "
        "send it (a gateway may send its per-source token instead); also read from the file "
        "`OPTIMIZER_AUTH_TOKEN_FILE` names",
        secret=True,
    )
    source_tokens: SourceTokens = setting(
        "",
        "OPTIMIZER_SOURCE_TOKENS",
        "per-source tokens, `name=token` pairs (commas or newlines; tokens of 16+ characters; a name may have "
        "several, for rotation): matcher and tuner accept each as a bearer token, and the tuner names a "
        "Report's source `token:<name>` after the token that authenticated it. Give every gateway its own "
        "token as its `OPTIMIZER_AUTH_TOKEN`; also read from the file `OPTIMIZER_SOURCE_TOKENS_FILE` names",
        parse=SourceTokens.parse,
        secret=True,
    )
    max_connection_age_seconds: int = setting(
        300,
        "OPTIMIZER_MAX_CONNECTION_AGE_SECONDS",
        "servers recycle connections so clients spread over new replicas",
        low=1,
        high=1 << 31,
    )
    tls_cert: str = setting("", "OPTIMIZER_TLS_CERT", "server TLS certificate (PEM file)")
    tls_key: str = setting("", "OPTIMIZER_TLS_KEY", "server TLS key (PEM file)")
    tls_client_ca: str = setting(
        "", "OPTIMIZER_TLS_CLIENT_CA", "with server TLS: require client certificates of this CA (mTLS)"
    )

    def __post_init__(self) -> None:
        check(self)

    @property
    def learning_rpcs(self) -> int:
        """The learning budget in effect: at most ``max_concurrent_rpcs - 1``."""
        return max(0, min(self.max_concurrent_learning_rpcs, self.max_concurrent_rpcs - 1))

    @classmethod
    def matcher(cls, env: Mapping[str, str]) -> ServerConfig:
        where = load(ListenSettings, env)
        return load(cls, env, listen=where.matcher_listen, metrics_port=where.matcher_metrics_port)

    @classmethod
    def tuner(cls, env: Mapping[str, str]) -> ServerConfig:
        where = load(ListenSettings, env)
        return load(cls, env, listen=where.tuner_listen, metrics_port=where.tuner_metrics_port)


@dataclass(frozen=True)
class ClientSettings:
    """What clients of the services (gateway, agent, CLI) dial and present."""

    matcher_address: str = setting(
        "127.0.0.1:50061",
        "MATCHER_ADDRESS",
        "where clients (gateway, agent, CLI) dial the matcher; `dns:///host:port` spreads over replicas",
    )
    tuner_address: str = setting("127.0.0.1:50062", "TUNER_ADDRESS", "where clients dial the tuner")
    auth_token: str = same_as(ServerConfig, "auth_token")
    tls_ca: str = setting(
        "", "OPTIMIZER_CLIENT_TLS_CA", "client side of TLS: the CA that signed the services' certificates"
    )
    tls_cert: str = setting("", "OPTIMIZER_CLIENT_TLS_CERT", "client certificate for mTLS (with the key)")
    tls_key: str = setting("", "OPTIMIZER_CLIENT_TLS_KEY", "client key for mTLS")


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway process: where it serves, its metrics port, the Ollama it forwards to."""

    listen: str = setting("127.0.0.1:11435", "GATEWAY_LISTEN", "gateway HTTP address (`--listen`)")
    metrics_port: int = setting(9463, "GATEWAY_METRICS_PORT", "gateway Prometheus port (same host)", low=0, high=65535)
    upstream: str = setting(
        "127.0.0.1:11434",
        "OLLAMA_HOST",
        "the gateway's upstream Ollama (`--upstream`): `host`, `host:port`, `:port` or a URL",
    )


@dataclass(frozen=True)
class LogSettings:
    """Logging of every command."""

    level: str = setting("INFO", "OPTIMIZER_LOG_LEVEL", "log level (`--log-level`): DEBUG, INFO, WARNING, ERROR")
