"""The long first steps of `up` and `migrate`, each said on stderr before it starts and with its duration
when it ends: the database (the first start of the embedded Postgres creates it), the schema migrations,
and (for `up`) the services becoming ready."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator

from .config import DatabaseConfig
from .db import describe_dsn, embedded_or_configured_dsn
from .embedded_pg import EmbeddedPostgres
from .migrations import MigrationReport, apply_migrations


class Step:
    """One announced step; ``failed()`` keeps it from saying it is done (the caller says why it failed)."""

    def __init__(self) -> None:
        self.ok = True

    def failed(self) -> None:
        self.ok = False


@contextlib.contextmanager
def step(what: str) -> Iterator[Step]:
    """Say what starts; once it is done, how long it took (nothing more when it fails: the error says why)."""
    print(f"{what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    current = Step()
    yield current
    if current.ok:
        print(f"{what}: done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def database_step(cfg: DatabaseConfig) -> str:
    if cfg.dsn:
        return f"connecting to Postgres at {describe_dsn(cfg.dsn)}"
    if (cfg.data_dir / "PG_VERSION").is_file():
        return f"starting the embedded Postgres in {cfg.data_dir}"
    return f"creating the embedded Postgres in {cfg.data_dir} (first run only, up to a minute)"


@contextlib.asynccontextmanager
async def migrated_database(
    cfg: DatabaseConfig, contract: bool = False
) -> AsyncIterator[tuple[str, EmbeddedPostgres | None, MigrationReport]]:
    """The database up and migrated: (DSN, the embedded server or None, what was applied)."""
    async with contextlib.AsyncExitStack() as stack:
        with step(database_step(cfg)):
            dsn, embedded = await stack.enter_async_context(embedded_or_configured_dsn(cfg))
        with step("applying the schema migrations"):
            report = await apply_migrations(dsn, contract=contract)
        yield dsn, embedded, report
