"""`python -m bench.ollama_sim --port PORT [--hardware NAME] [--time-scale X]`."""

from __future__ import annotations

import argparse
import asyncio

from .counts import COUNT_MODES
from .emulator import EmulatorConfig, start_emulator
from .profiles import DEFAULT_HARDWARE, HARDWARE, MODELS


def parse_args(argv: list[str] | None = None) -> EmulatorConfig:
    p = argparse.ArgumentParser(prog="python -m bench.ollama_sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--hardware", choices=sorted(HARDWARE), default=DEFAULT_HARDWARE)
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-ctx", type=int, default=None, help="OLLAMA_CONTEXT_LENGTH (default: VRAM tier)")
    p.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL")
    p.add_argument("--keep-alive", type=float, default=300.0, help="OLLAMA_KEEP_ALIVE in seconds (<0: forever)")
    p.add_argument(
        "--count-mode",
        choices=sorted(COUNT_MODES),
        default="full",
        help="how prompt_eval_count is reported (the Ollama version it mirrors)",
    )
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of the catalogue")
    a = p.parse_args(argv)
    return EmulatorConfig(
        hardware=a.hardware,
        models=tuple(a.models.split(",")),
        default_num_ctx=a.num_ctx,
        num_parallel=a.num_parallel,
        time_scale=a.time_scale,
        seed=a.seed,
        keep_alive_s=a.keep_alive,
        count_mode=a.count_mode,
        host=a.host,
        port=a.port,
    )


async def serve(config: EmulatorConfig) -> None:
    async with start_emulator(config) as emu:
        print(f"ollama emulator ({config.hardware}, x{config.time_scale}) listening on {emu.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    try:
        asyncio.run(serve(parse_args(argv)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
