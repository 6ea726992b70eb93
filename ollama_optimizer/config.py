"""Configuration from environment variables, with documented defaults.

Every setting is read once at start-up; see the README's configuration table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .source_tokens import SourceTokens

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StartupError(RuntimeError):
    """A service cannot start (a dependency unreachable or refusing, an address in use): the CLI
    logs the message, without a traceback, and exits 1."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_secret(name: str) -> str:
    """A secret from ``name``, else from the file ``name_FILE`` names (Docker and Kubernetes secret
    files), else ""; surrounding whitespace is dropped."""
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if not value and path:
        try:
            value = Path(path).read_text()
        except OSError as exc:
            raise StartupError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return value.strip()


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (true/false), got {raw!r}")


@dataclass(frozen=True)
class DatabaseConfig:
    """Where Postgres is. An empty DSN means: start an embedded Postgres in data_dir."""

    dsn: str = field(default_factory=lambda: env_str("OPTIMIZER_DSN", ""))
    data_dir: Path = field(
        default_factory=lambda: Path(env_str("OPTIMIZER_DATA_DIR", str(PROJECT_ROOT / ".data" / "pg")))
    )
    pool_min: int = field(default_factory=lambda: env_int("OPTIMIZER_DB_POOL_MIN", 2))
    pool_max: int = field(default_factory=lambda: env_int("OPTIMIZER_DB_POOL_MAX", 10))
    # How long start-up (services, `migrate`, `up`) waits for a configured Postgres that is not
    # reachable yet (refused, no socket, starting up, timeouts), retrying with backoff; 0 = one attempt.
    connect_timeout_seconds: float = field(
        default_factory=lambda: env_float("OPTIMIZER_DB_CONNECT_TIMEOUT_SECONDS", 60.0)
    )


@dataclass(frozen=True)
class ServerConfig:
    """One gRPC service: listen address, metrics port, limits, optional auth."""

    listen: str
    metrics_port: int
    max_concurrent_rpcs: int = field(default_factory=lambda: env_int("OPTIMIZER_MAX_CONCURRENT_RPCS", 256))
    # Observe/Report share of max_concurrent_rpcs; always kept below it, so the request path keeps the rest.
    max_concurrent_learning_rpcs: int = field(
        default_factory=lambda: env_int("OPTIMIZER_MAX_CONCURRENT_LEARNING_RPCS", 64)
    )
    grace_seconds: float = field(default_factory=lambda: env_float("OPTIMIZER_SHUTDOWN_GRACE_SECONDS", 5.0))
    auth_token: str = field(default_factory=lambda: env_secret("OPTIMIZER_AUTH_TOKEN"))
    # Per-source bearer tokens (name=token, ...): accepted beside auth_token; a Report's source is the name.
    source_tokens: SourceTokens = field(
        default_factory=lambda: SourceTokens.parse(env_secret("OPTIMIZER_SOURCE_TOKENS"))
    )
    max_connection_age_seconds: int = field(
        default_factory=lambda: env_int("OPTIMIZER_MAX_CONNECTION_AGE_SECONDS", 300)
    )
    tls_cert: str = field(default_factory=lambda: env_str("OPTIMIZER_TLS_CERT", ""))
    tls_key: str = field(default_factory=lambda: env_str("OPTIMIZER_TLS_KEY", ""))
    tls_client_ca: str = field(default_factory=lambda: env_str("OPTIMIZER_TLS_CLIENT_CA", ""))

    @property
    def learning_rpcs(self) -> int:
        """The learning budget in effect: at most ``max_concurrent_rpcs - 1``."""
        return max(0, min(self.max_concurrent_learning_rpcs, self.max_concurrent_rpcs - 1))

    @classmethod
    def matcher(cls) -> ServerConfig:
        return cls(
            listen=env_str("MATCHER_LISTEN", "127.0.0.1:50061"),
            metrics_port=env_int("MATCHER_METRICS_PORT", 9461),
        )

    @classmethod
    def tuner(cls) -> ServerConfig:
        return cls(
            listen=env_str("TUNER_LISTEN", "127.0.0.1:50062"),
            metrics_port=env_int("TUNER_METRICS_PORT", 9462),
        )
