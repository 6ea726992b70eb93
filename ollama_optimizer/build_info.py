"""The `optimizer_build_info{version}` metric (value 1) every component exports."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from .version import package_version


def register_build_info(registry: CollectorRegistry = REGISTRY) -> Gauge:
    gauge = Gauge(
        "optimizer_build_info", "The running ollama-optimizer version (value 1).", ["version"], registry=registry
    )
    gauge.labels(package_version()).set(1)
    return gauge
