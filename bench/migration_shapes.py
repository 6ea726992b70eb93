"""Insert cost of the two shapes of the matcher's probe keys: trigger-filled (0003 today, fresh installs)
and generated columns (0003 as first released, databases migrated before checksums).

`python -m bench.migration_shapes [--templates N] [--rounds R]`: N templates × 4 windows per round,
inserted in one statement into each shape, alternating; one line per round and shape.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import asyncpg

from ollama_optimizer.embedded_pg import EmbeddedPostgres
from ollama_optimizer.migrations import MIGRATIONS_DIR, apply_migrations

RELEASED_0003 = Path(__file__).resolve().parent.parent / "tests" / "migration_history" / "0003_matcher_probe_keys.sql"
FILL = """INSERT INTO matcher_template (algorithm_version, stable_window) SELECT 1, 64 FROM generate_series(1, {n});
INSERT INTO matcher_fingerprint (template_id, window_size, fp)
SELECT t.id, w, (random() * 9e18)::bigint FROM matcher_template t, unnest(ARRAY[16, 32, 64, 128]) AS w"""


async def run(templates: int, rounds: int) -> None:
    server = await asyncio.to_thread(EmbeddedPostgres, Path(tempfile.mkdtemp()) / "pg")
    try:
        admin = await asyncpg.connect(server.uri())
        for name in ("triggered", "generated"):
            await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        await apply_migrations(server.uri("triggered"))
        generated = await asyncpg.connect(server.uri("generated"))
        await generated.execute((MIGRATIONS_DIR / "0001_matcher.sql").read_text())
        await generated.execute(RELEASED_0003.read_text())
        triggered = await asyncpg.connect(server.uri("triggered"))
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for round_no in range(rounds):
            for name, conn in (("trigger", triggered), ("generated", generated)):
                await conn.execute("TRUNCATE matcher_template CASCADE")
                started = time.perf_counter()
                await conn.execute(FILL.format(n=templates))
                took = time.perf_counter() - started
                print(
                    f"round {round_no} {name}: {templates * 4} rows in {took:.2f} s "
                    f"({took / (templates * 4) * 1e6:.1f} us/row)"
                )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        await triggered.close()
        await generated.close()
    finally:
        await asyncio.to_thread(server.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--templates", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.templates, args.rounds))


if __name__ == "__main__":
    main()
