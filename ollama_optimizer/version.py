"""The installed ollama-optimizer version (`--version`, the build_info metric)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def package_version() -> str:
    try:
        return version("ollama-optimizer")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
