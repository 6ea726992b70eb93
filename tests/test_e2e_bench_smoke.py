"""A tiny run of the end-to-end benchmark harness (bench/e2e.py): every arm, one scenario, ~40 requests.

Structural truths only (figures come from the benchmark itself, never from tests): the defaults truncate
prompts that exceed Ollama's default context, the optimizer behind the real gateway, matcher, tuner and
Postgres does not, and the summary carries the keys the issue asks for.
"""

from __future__ import annotations

from bench.e2e import COMPAT_ARMS, COMPAT_DOOR, KEYS, SCENARIOS, run_scenarios, summary
from bench.e2e_arms import ARMS
from ollama_optimizer.embedded_pg import EmbeddedPostgres

# Generous deadlines: a loaded CI machine must not turn this into a test of fail-open passthrough.
RELAXED = {"budget_ms": 5000.0, "call_timeout_ms": 5000.0}


async def test_every_arm_tiny_run(pg_server: EmbeddedPostgres) -> None:
    scenario = next(s for s in SCENARIOS if s.name == "gpu-8gb")
    results = await run_scenarios(pg_server, [scenario], 40, (1,), RELAXED)
    figures = results["gpu-8gb"][1]
    assert figures["passthrough"]["truncated"] > 0  # heads beyond the 4096 default
    assert figures["optimizer"]["truncated"] == 0
    assert figures["oracle"]["truncated"] == 0 and figures["oracle"]["reloads"] == 0
    assert figures["naive"]["reloads"] > figures["optimizer"]["reloads"]
    assert figures["optimizer"]["errors"] == 0
    # Aider's rule never truncates here, and pays a reload whenever the prompt's size changes.
    assert figures["client-rule"]["truncated"] == 0
    assert figures["client-rule"]["reloads"] > figures["optimizer"]["reloads"]
    # A server-wide 32k context holds every prompt of this scenario; 8k fewer than the 4k default truncates.
    assert figures["static-32k"]["truncated"] == 0
    assert figures["static-8k"]["truncated"] <= figures["passthrough"]["truncated"]
    assert figures["phase-oracle"]["truncated"] == 0 and figures["phase-oracle"]["reloads"] <= 3
    # Every arm's latency includes its real path to the emulator; the optimizer's includes the gateway.
    assert all(f["overhead_ms_p50"] > 0 for f in figures.values())
    assert "learning_requests" in figures["optimizer"] and figures["optimizer"]["mean_untruncated_s"] is not None

    line = summary(results)
    assert set(line) == {"gpu-8gb"}
    for arm in ARMS:
        assert set(KEYS) <= set(line["gpu-8gb"][arm])
        assert set(line["gpu-8gb"][arm]["by_concurrency"]) == {"1"}


async def test_compatible_api_arm_tiny_run(pg_server: EmbeddedPostgres) -> None:
    scenario = next(s for s in SCENARIOS if s.name == "gpu-8gb")
    results = await run_scenarios(pg_server, [scenario], 40, (1,), RELAXED, COMPAT_ARMS, door=COMPAT_DOOR)
    figures = results["gpu-8gb"][1]
    assert set(figures) == set(COMPAT_ARMS)
    assert figures["passthrough"]["truncated"] > 0  # /v1 cannot set the context: Ollama's default
    assert figures["optimizer"]["truncated"] == 0 and figures["optimizer"]["errors"] == 0
    assert set(KEYS) <= set(summary(results)["gpu-8gb"]["optimizer"])
    # Both arms' latencies include their real path to the emulator; the optimizer's includes the gateway.
    assert all(f["overhead_ms_p50"] > 0 for f in figures.values())
