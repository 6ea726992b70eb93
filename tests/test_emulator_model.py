"""The emulator's models without HTTP: tokenizer ratio, speed/memory model, determinism, CLI."""

from __future__ import annotations

import subprocess
import sys

import ollama
import pytest

from bench.ollama_sim import HARDWARE, MODELS, EmulatorConfig, perf, start_emulator, token_count, unit_count
from bench.ollama_sim.engine import vram_tier_num_ctx
from bench.ollama_sim.profiles import GiB

TEXT = (
    "Please summarise the following support ticket for the on-call engineer. The customer says that "
    "their nightly export job has been failing since Tuesday, that the error mentions a timeout while "
    "connecting to the database, and that they already restarted the worker twice without success. "
) * 5


@pytest.mark.parametrize("name", list(MODELS))
def test_tokens_are_a_realistic_multiple_of_matcher_units(name):
    ratio = token_count(TEXT, MODELS[name]) / unit_count(TEXT)
    assert 1.05 <= ratio <= 1.4


def test_vram_tiers():
    assert [vram_tier_num_ctx(HARDWARE[h]) for h in ("cpu", "gpu-8gb", "gpu-24gb", "gpu-80gb")] == [
        4096,
        4096,
        32768,
        262144,
    ]


def test_num_batch_speeds_prompts_under_spill_not_decode_and_not_on_cpu():
    m, gpu = MODELS["llama3.3:70b"], HARDWARE["gpu-24gb"]
    small, large = (perf.place(m, gpu, 4096, b, -1, gpu.vram_bytes) for b in (512, 2048))
    assert 0 < large.gpu_layers < m.layers
    assert perf.prompt_seconds(m, gpu, large, 0, 4096, 2048) < 0.6 * perf.prompt_seconds(m, gpu, small, 0, 4096, 512)
    assert perf.decode_seconds(m, gpu, small, 100, 1) == perf.decode_seconds(m, gpu, small, 100, 1)
    s, cpu = MODELS["smollm2:135m"], HARDWARE["cpu"]
    pl = perf.place(s, cpu, 4096, 512, -1, 0)
    flat = [perf.prompt_seconds(s, cpu, pl, 0, 400, b) for b in (128, 256, 512)]
    assert max(flat) / min(flat) < 1.05


def test_spill_slows_decode():
    m, gpu = MODELS["llama3.1:8b"], HARDWARE["gpu-8gb"]
    fits = perf.place(m, gpu, 4096, 512, -1, gpu.vram_bytes)
    spills = perf.place(m, gpu, 65536, 512, -1, gpu.vram_bytes)
    assert fits.gpu_layers == m.layers > spills.gpu_layers
    assert perf.decode_seconds(m, gpu, spills, 10, 1)[0] > 2 * perf.decode_seconds(m, gpu, fits, 10, 1)[0]
    assert spills.vram_bytes <= 8 * GiB


async def test_same_seed_same_figures():
    async def run(seed: int) -> list[tuple]:
        async with start_emulator(EmulatorConfig(time_scale=1e5, keep_alive_s=-1, seed=seed)) as emu:
            client = ollama.AsyncClient(host=emu.url)
            for text in ("alpha", "beta", "gamma"):
                await client.chat(model="llama3.2:3b", messages=[{"role": "user", "content": text}])
            return [
                (r.eval_count, r.prompt_eval_count, round(r.prompt_eval_s, 9), round(r.eval_s, 9)) for r in emu.requests
            ]

    assert await run(1) == await run(1)
    assert await run(1) != await run(2)


async def test_output_hook_controls_length():
    cfg = EmulatorConfig(time_scale=1e5, output_tokens=lambda model, msgs: 7)
    async with start_emulator(cfg) as emu:
        r = await ollama.AsyncClient(host=emu.url).generate(model="smollm2:135m", prompt="hi")
        assert r.eval_count == 7 and r.done_reason == "stop"


def test_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "bench.ollama_sim", "--help"], capture_output=True, text=True, check=True
    )
    assert "--time-scale" in out.stdout and "--hardware" in out.stdout
