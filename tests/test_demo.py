"""`make demo`: the same workload to Ollama alone and through the optimizer, side by side, then `stats`."""

from __future__ import annotations

import asyncio
import os
import re
import sys

from bench.demo_runs import FIGURES, comparison

WAIT_S = 300


def test_the_comparison_words_each_difference_by_its_direction() -> None:
    baseline = {
        "answered": 20,
        "truncated_requests": 7,
        "loads": 2,
        "reloads": 0,
        "evictions": 0,
        "latency_p50_s": 4.0,
        "latency_p95_s": 9.0,
        "kv_mean_bytes": 512 << 20,
        "kv_peak_bytes": 512 << 20,
    }
    optimized = {
        **baseline,
        "truncated_requests": 0,
        "loads": 5,
        "reloads": 3,
        "latency_p50_s": 3.0,
        "latency_p95_s": 12.5,
        "kv_peak_bytes": 2 << 30,
    }
    text = comparison(baseline, optimized)
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[1:])}
    assert "7 fewer" in text and "3 more" in text and "1.00 s faster" in text and "3.50 s slower" in text
    assert "1.5 GiB more" in text and rows["requests answered"] == ["20", "20", "same"]
    assert not re.search(r"-\d", text), text  # never a negative figure
    assert len(rows) == len(FIGURES)


async def _demo(env: dict[str, str], *args: str) -> tuple[str, str]:
    """`make demo`'s command with ``args``; its standard output and error (it must succeed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.demo",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode(), err.decode()


async def test_make_demo_prints_both_runs_side_by_side_and_the_stats(dsn: str) -> None:
    env = {**os.environ, "OPTIMIZER_DSN": dsn, "OPTIMIZER_LOG_LEVEL": "WARNING"}
    text, _err = await _demo(env, "--requests", "24", "--hardware", "gpu-8gb")
    header = next(line for line in text.splitlines() if "Ollama alone" in line)
    assert "through the optimizer" in header and "difference" in header
    answered = next(line for line in text.splitlines() if line.startswith("requests answered"))
    assert re.split(r"\s{2,}", answered) == ["requests answered", "24", "24", "same"], answered
    for figure in FIGURES:
        assert re.search(rf"^{re.escape(figure.label)}\s", text, re.M), figure.label
    assert "$ ollama-optimizer stats" in text and "truncations prevented" in text
    assert not re.search(r"-\d[\d.]*\s*\S*\s*saved", text)


async def test_make_demo_prints_no_log_lines_with_embedded_postgres() -> None:
    """A first run as `make demo` makes it: embedded Postgres, no logging settings of the user's. Standard
    error stays empty (no service log, no gRPC fork-handler line, no pgserver warning)."""
    drop = ("OPTIMIZER_DSN", "OPTIMIZER_LOG_LEVEL", "GRPC_VERBOSITY", "GRPC_ENABLE_FORK_SUPPORT", "PYTHONWARNINGS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.pop("XDG_RUNTIME_DIR", None)  # pgserver's platformdirs warns without it
    text, err = await _demo(env, "--requests", "6")
    assert err == ""
    assert "$ ollama-optimizer stats" in text
    assert not re.search(r"\b(INFO|WARNING|ERROR)\b|fork_posix|Warning:", text), text


async def test_make_demo_on_24gb_claims_only_what_the_emulator_saw(dsn: str) -> None:
    """The gateway sees no GPU behind the emulator: the tuner used to assume a 4096 default where the
    emulator's is 32768 and claimed 4 truncations prevented that never happened. The first run (learning
    only, Ollama's defaults) shows the default in /api/ps: the tuner learns it, and the two accounts agree."""
    env = {**os.environ, "OPTIMIZER_DSN": dsn, "OPTIMIZER_LOG_LEVEL": "WARNING"}
    text, _err = await _demo(env, "--hardware", "gpu-24gb")
    emulator, stats = text.split("$ ollama-optimizer stats")
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in stats.splitlines())}
    truncated = next(line for line in emulator.splitlines() if line.startswith("truncated prompts"))
    baseline_cut, optimized_cut = (int(v) for v in re.split(r"\s{2,}", truncated)[1:3])
    assert rows["truncations prevented"][-1] == str(baseline_cut - optimized_cut), text
    assert all(cell.startswith("32768 -> ") for cell in rows["num_ctx default -> now"]), text
    assert "(assumed)" not in stats
