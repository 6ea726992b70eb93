"""A service's fingerprint kernel: compiled at start (``warm_up_at_start``) and reported as the
``optimizer_fingerprint_kernel{kernel}`` metric (value 1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from prompt_fingerprint.kernel import active_kernel, warm_up

log = logging.getLogger(__name__)


def warm_up_at_start() -> str:
    """Compile the fingerprint kernels before serving (seconds without numba's disk cache); the kernel used."""
    started = time.perf_counter()
    kernel = warm_up()
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
