"""At 100k templates the lookup plan (the matcher's generic plan) probes the block indexes: no Seq Scan."""

from __future__ import annotations

import json

import numpy as np

from matcher_service.blocks import build_probes, to_signed
from matcher_service.settings import MatcherSettings
from matcher_service.store import LOOKUP_SQL, SESSION_SETTINGS, Query, lookup, lookup_args
from prompt_fingerprint import algorithm_version

TEMPLATES = 100_000
WINDOWS = (512, 1024)  # two fingerprint rows per template: 200k rows


def _nodes(plan: dict) -> list[dict]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


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
        async with conn.transaction():  # the matcher pool's session settings and its generic plan
            for name, value in SESSION_SETTINGS.items():
                await conn.execute(f"SET LOCAL {name} = '{value}'")
            plan = json.loads(
                await conn.fetchval("EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + LOOKUP_SQL, *lookup_args(lookup_query))
            )[0]["Plan"]
            best = await lookup(conn, lookup_query)
    scans = [(n["Node Type"], n.get("Relation Name")) for n in _nodes(plan)]
    assert ("Seq Scan", "matcher_fingerprint") not in scans
    indexes = {n.get("Index Name") for n in _nodes(plan)}
    assert {f"matcher_probe_k{i}_idx" for i in range(4)} <= indexes
    assert best is not None and (best.template_id, best.window, best.distance) == (124, 1024, 0)
    assert to_signed(query[0]) == int(fps[123, 0])
