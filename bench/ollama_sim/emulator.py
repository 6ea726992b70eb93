"""The importable emulator: configuration, lifecycle on an ephemeral port, and counters for assertions."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from aiohttp import web

from .engine import Engine, RequestRecord, Sensitivity
from .output import OutputHook
from .profiles import DEFAULT_HARDWARE, MODELS
from .server import OllamaApp
from .serving import Served
from .summary import run_summary


@dataclass
class EmulatorConfig:
    """How to run the emulator. default_num_ctx=None applies Ollama's VRAM-tier rule (OLLAMA_CONTEXT_LENGTH
    otherwise); output_tokens overrides the natural output length (model, messages) -> tokens."""

    hardware: str = DEFAULT_HARDWARE
    models: tuple[str, ...] = field(default_factory=lambda: tuple(MODELS))
    default_num_ctx: int | None = None
    num_parallel: int = 1
    time_scale: float = 1.0
    seed: int = 0
    output_tokens: OutputHook | None = None
    max_loaded_models: int | None = None
    keep_alive_s: float = 300.0  # OLLAMA_KEEP_ALIVE; < 0 keeps runners loaded forever
    sensitivity: Sensitivity = field(default_factory=Sensitivity)  # rate multipliers (1.0 = cited constants)
    count_mode: str = "full"  # how prompt_eval_count is reported, by Ollama version (counts.COUNT_MODES)
    host: str = "127.0.0.1"
    port: int = 0


class Emulator(Served):
    """A running emulator; use as `async with start_emulator(cfg) as emu:`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = c = config or EmulatorConfig()
        super().__init__(c.host, c.port)
        self.engine = Engine(
            c.hardware,
            list(c.models),
            c.default_num_ctx,
            c.num_parallel,
            c.time_scale,
            c.seed,
            c.output_tokens,
            c.max_loaded_models,
            c.keep_alive_s,
            c.sensitivity,
            c.count_mode,
        )

    def build(self) -> web.Application:
        return OllamaApp(self.engine).build()

    # ---- counters ----------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        return self.engine.requests

    @property
    def loads(self) -> Counter[str]:
        """Runner starts per model (cold loads, reloads, loads after eviction or expiry)."""
        return self.engine.loads

    @property
    def reloads(self) -> Counter[str]:
        """Reloads of a loaded runner because the request's runner options differed."""
        return self.engine.reloads

    @property
    def evictions(self) -> Counter[str]:
        return self.engine.evictions

    @property
    def truncated(self) -> Counter[str]:
        """Truncated requests per model."""
        return self.engine.truncated

    @property
    def truncated_requests(self) -> int:
        return sum(self.engine.truncated.values())

    def runner_options(self, model: str) -> dict | None:
        return self.engine.runner_options(model)

    def kv_bytes(self, model: str | None = None) -> int:
        return self.engine.kv_bytes(model)

    def memory_stats(self) -> dict[str, float]:
        return self.engine.memory_stats()

    def now(self) -> float:
        """Simulated seconds since start."""
        return self.engine.now()

    def summary(self) -> dict:
        """Aggregate figures for a benchmark arm (latencies in simulated seconds)."""
        return run_summary(self)

    def request_log(self) -> list[dict]:
        """The request log as plain dicts (for JSON dumps)."""
        return [asdict(r) for r in self.requests]


def start_emulator(config: EmulatorConfig | None = None) -> Emulator:
    """An Emulator to use as an async context manager (binds an ephemeral port on enter)."""
    return Emulator(config)
