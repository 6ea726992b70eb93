"""`python -m bench.ollama_sim --port PORT [--hardware NAME] [--time-scale X]`."""

from __future__ import annotations

import argparse

from .counts import COUNT_MODES
from .emulator import Emulator, EmulatorConfig
from .engine import DEFAULT_KEEP_ALIVE_S
from .profiles import DEFAULT_HARDWARE, HARDWARE, MODELS
from .serving import add_server_flags, serve


def parse_args(argv: list[str] | None = None) -> EmulatorConfig:
    p = argparse.ArgumentParser(prog="python -m bench.ollama_sim", description=__doc__)
    add_server_flags(p, None, "OLLAMA_CONTEXT_LENGTH (default: VRAM tier)", DEFAULT_KEEP_ALIVE_S)
    p.add_argument("--hardware", choices=sorted(HARDWARE), default=DEFAULT_HARDWARE)
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL")
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


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    serve(Emulator(config), f"ollama emulator ({config.hardware}, x{config.time_scale})")


if __name__ == "__main__":
    main()
