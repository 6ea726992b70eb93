"""At 100k templates the lookup (the matcher's generic plans) probes the block indexes: no Seq Scan."""

from __future__ import annotations

import numpy as np

from matcher_service.blocks import build_probes, to_signed
from matcher_service.settings import MatcherSettings
from matcher_service.store import SESSION_SETTINGS, Query, lookup
from prompt_fingerprint import algorithm_version

TEMPLATES = 100_000
WINDOWS = (512, 1024)  # two fingerprint rows per template: 200k rows
PROBE_INDEXES = [f"matcher_probe_k{i}_idx" for i in range(4)]


async def test_lookup_never_scans_the_fingerprint_table(pool) -> None:
    version = algorithm_version(4, True)
    rng = np.random.default_rng(7)
    fps = rng.integers(0, 1 << 64, size=(TEMPLATES, len(WINDOWS)), dtype=np.uint64).astype(np.int64)
    await pool.execute(
        """INSERT INTO matcher_template (algorithm_version, stable_window)
                          SELECT $1, 1024 FROM generate_series(1, $2)""",
        version,
        TEMPLATES,
    )
    records = [(t + 1, w, int(fps[t, i])) for t in range(TEMPLATES) for i, w in enumerate(WINDOWS)]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "matcher_fingerprint", records=records, columns=["template_id", "window_size", "fp"]
        )
        await conn.execute("VACUUM (ANALYZE) matcher_template")
        await conn.execute("VACUUM (ANALYZE) matcher_fingerprint")
        settings = MatcherSettings()
        query = tuple(int(x) & ((1 << 64) - 1) for x in fps[123])  # a stored template's own windows
        ks = tuple(settings.threshold(w) for w in WINDOWS)
        lookup_query = Query(version, WINDOWS, query, ks, build_probes(WINDOWS, query, list(ks)))
        async with conn.transaction():  # the matcher pool's session settings and its generic plans
            for name, value in SESSION_SETTINGS.items():
                await conn.execute(f"SET LOCAL {name} = '{value}'")
            best = await lookup(conn, lookup_query)
            # Scans this transaction made (the statements inside the lookup function included): a table's
            # count is its sequential scans, an index's its index scans.
            scans = {
                relation: await conn.fetchval("SELECT pg_stat_get_xact_numscans($1::regclass)", relation)
                for relation in ["matcher_fingerprint", *PROBE_INDEXES]
            }
    assert scans["matcher_fingerprint"] == 0
    assert all(scans[index] > 0 for index in PROBE_INDEXES), scans
    assert best is not None and (best.template_id, best.window, best.distance) == (124, 1024, 0)
    assert to_signed(query[0]) == int(fps[123, 0])
