"""Host memory probes attached to telemetry: psutil RSS always, pynvml GPU memory when it works.

No pynvml, no driver or no GPU means no GPU figures (zeros), never an error. Called off the request path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryFigures:
    host_rss_bytes: int = 0
    gpu_memory_used_bytes: int = 0
    gpu_memory_total_bytes: int = 0


class HostProbes:
    """Reads this process's RSS and the summed memory of all visible GPUs."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._process = psutil.Process() if enabled else None
        self._nvml: Any = None
        self._gpus: list[Any] = []
        if enabled:
            self._init_gpu()

    def _init_gpu(self) -> None:
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError (no driver / no GPU), anything else
            log.debug("no GPU figures: %s", exc)
            self._gpus = []

    def read(self) -> MemoryFigures:
        if not self._enabled or self._process is None:
            return MemoryFigures()
        try:
            rss = int(self._process.memory_info().rss)
        except psutil.Error:
            rss = 0
        used = total = 0
        if self._gpus:
            try:
                for handle in self._gpus:
                    info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                    used += int(info.used)
                    total += int(info.total)
            except Exception as exc:  # noqa: BLE001 - a GPU that vanished: stop asking
                log.debug("GPU probe failed, disabling: %s", exc)
                self._gpus, used, total = [], 0, 0
        return MemoryFigures(rss, used, total)
