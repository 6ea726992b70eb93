"""No prompt text anywhere: traffic through the gateway, then every table, the logs and /metrics are scanned."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import asyncpg
import ollama

from plugin_fixtures import gateway_chain, plugin_config

MODEL = "llama3.2:3b"
SECRETS = (
    "Zebracorn Quillfeather authorises wire transfer 88412 to account Vex-Orchid",
    "patient Marisol Tenbrook-Ayala reports migraine after the fourteenth dose",
    "the launch passphrase is cobalt-heron-semaphore-1177",
)
SYSTEM = "You are Glimmerwick, the confidential assistant of Ostrava Nightingale Holdings."
WINDOW = 16  # any 16-character piece of a prompt counts as a leak


def needles() -> set[str]:
    texts = (*SECRETS, SYSTEM)
    pieces = {t[i : i + WINDOW].lower() for t in texts for i in range(0, len(t) - WINDOW + 1, 3)}
    return pieces | {"zebracorn", "glimmerwick", "tenbrook", "cobalt-heron"}


def leaks(haystack: str) -> list[str]:
    lowered = haystack.lower()
    return sorted(n for n in needles() if n in lowered)


async def dump_tables(pool: asyncpg.Pool) -> str:
    """Every row of every table (all columns cast to text)."""
    tables = await pool.fetch(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    assert tables
    parts = []
    for schema, name in tables:
        rows = await pool.fetch(f'SELECT t::text AS r FROM "{schema}"."{name}" t')
        parts.extend(r["r"] for r in rows)
    return "\n".join(parts)


async def test_no_prompt_text_in_tables_logs_or_metrics(matcher, tuner, pool, pg_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = plugin_config(matcher.address, tuner.address)
    async with gateway_chain(cfg) as (gw, tap, emu):
        client = ollama.AsyncClient(host=gw.url)
        for round_ in range(3):
            for i, secret in enumerate(SECRETS):
                messages = [
                    {"role": "system", "content": SYSTEM * 20},
                    {"role": "user", "content": f"{secret} (round {round_})"},
                ]
                if i % 2:
                    async for _ in await client.chat(model=MODEL, messages=messages, stream=True):
                        pass
                else:
                    await client.chat(model=MODEL, messages=messages)
                await client.generate(model=MODEL, system=SYSTEM, prompt=secret * 30)
                await gw.gateway.flush()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as response:
                gateway_metrics = await response.text()
    await tuner.core.writer.flush()

    rows = await dump_tables(pool)
    assert await pool.fetchval("SELECT count(*) FROM tuner_outcome") >= 9  # learning really happened
    assert await pool.fetchval("SELECT count(*) FROM matcher_template") >= 1
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    pg_logs = "\n".join(p.read_text(errors="replace") for p in Path(pg_server.data_dir).rglob("*.log"))
    assert emu.requests, "traffic reached the emulator"
    for where, text in (
        ("tables", rows),
        ("logs", logs),
        ("postgres logs", pg_logs),
        ("gateway metrics", gateway_metrics),
    ):
        assert not leaks(text), f"prompt text found in {where}: {leaks(text)[:5]}"
    assert leaks(SECRETS[0]) and leaks(tap.bodies[-1][1].decode())  # the scanner does find real text
