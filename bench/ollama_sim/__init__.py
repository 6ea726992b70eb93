"""Ollama emulator for benchmarks and end-to-end tests (DESIGN §2, §9; constants in bench/CONSTANTS.md).

async with start_emulator(EmulatorConfig(hardware="gpu-24gb", time_scale=1000)) as emu:
    client = ollama.AsyncClient(host=emu.url)
    ...
    emu.reloads["llama3.1:8b"], emu.truncated_requests, emu.memory_stats()
"""

from .emulator import Emulator, EmulatorConfig, start_emulator
from .engine import RequestRecord, Sensitivity
from .profiles import DEFAULT_HARDWARE, HARDWARE, MODELS, HardwareProfile, ModelProfile
from .tokens import token_count, unit_count

__all__ = [
    "DEFAULT_HARDWARE",
    "HARDWARE",
    "MODELS",
    "Emulator",
    "EmulatorConfig",
    "HardwareProfile",
    "ModelProfile",
    "RequestRecord",
    "Sensitivity",
    "start_emulator",
    "token_count",
    "unit_count",
]
