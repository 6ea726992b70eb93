"""A service's fingerprint kernel: chosen by ``OPTIMIZER_FINGERPRINT_KERNEL``, compiled at start
(``warm_up_at_start``) and reported as the ``optimizer_fingerprint_kernel{kernel}`` metric (value 1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from prompt_fingerprint.kernel import COMPILED, NUMPY, active_kernel, warm_up

from .settings_env import setting

log = logging.getLogger(__name__)


def _kernel_name(raw: str) -> str:
    name = raw.strip().lower()
    if name not in (COMPILED, NUMPY):
        raise ValueError(f"must be {COMPILED} or {NUMPY}")
    return name


@dataclass(frozen=True)
class KernelSettings:
    """Which code computes fingerprints in the matcher and the gateway."""

    kernel: str = setting(
        COMPILED,
        "OPTIMIZER_FINGERPRINT_KERNEL",
        "`compiled`: matcher and gateway compile the fingerprint kernels (numba) at start, before they serve, "
        "and use them (~135 MiB more RSS per process; seconds of compiling without numba's disk cache, "
        "`NUMBA_CACHE_DIR`); `numpy`: the numpy code, same fingerprints, ~8x slower, numba never imported",
        parse=_kernel_name,
    )


def warm_up_at_start(settings: KernelSettings) -> str:
    """Compile the chosen kernels before serving (seconds without numba's disk cache); the kernel in use."""
    started = time.perf_counter()
    kernel = warm_up(settings.kernel)
    log.info("fingerprint kernel: %s (ready in %.1f s)", kernel, time.perf_counter() - started)
    return kernel


class _KernelCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "optimizer_fingerprint_kernel",
            "Code computing this process's fingerprints (value 1): compiled (numba) or numpy.",
            labels=["kernel"],
        )
        family.add_metric([active_kernel()], 1)
        yield family


def register_kernel_metric(registry: CollectorRegistry = REGISTRY) -> None:
    registry.register(_KernelCollector())
