"""Which code computes token hashes and SimHashes: the compiled kernels (numba) or the numpy code.

Both give the same bits. The compiled kernels are used only after ``warm_up`` has compiled them (or loaded
them from numba's disk cache), so a request never waits for a compiler; until then, when numba is absent,
when compiling fails, or with ``OPTIMIZER_FINGERPRINT_KERNEL=numpy``, the numpy code runs.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

ENV_VAR = "OPTIMIZER_FINGERPRINT_KERNEL"
COMPILED, NUMPY = "compiled", "numpy"

_compiled: ModuleType | None = None


def compiled_kernels() -> ModuleType | None:
    """The module of compiled kernels when warmed up and chosen, else None (use numpy)."""
    return _compiled


def active_kernel() -> str:
    """``compiled`` or ``numpy``: the code fingerprints are computed with now."""
    return NUMPY if _compiled is None else COMPILED


def warm_up() -> str:
    """Choose the kernel as ``OPTIMIZER_FINGERPRINT_KERNEL`` says (``compiled``, the default, or ``numpy``),
    compile the compiled one by fingerprinting a short text with it, and return the kernel now in use.

    Never raises for a missing or failing numba: it logs a warning and keeps numpy."""
    global _compiled
    wanted = os.environ.get(ENV_VAR, "") or COMPILED
    if wanted not in (COMPILED, NUMPY):
        log.warning("%s=%r is neither %r nor %r: using numpy", ENV_VAR, wanted, COMPILED, NUMPY)
    if wanted != COMPILED:
        _compiled = None
        return NUMPY
    try:
        from . import compiled as module  # imports numba (~100 MiB of LLVM per process)
        from .fingerprints import fingerprint

        _compiled = module
        fingerprint("warm up the compiled kernels: 1 2 3 4 5 six seven " * 8)
    except Exception as exc:  # noqa: BLE001 - numba missing, incompatible or failing to compile: numpy does the same
        _compiled = None
        log.warning("fingerprint kernels not compiled (%s: %s): using numpy", type(exc).__name__, exc)
    return active_kernel()


def use_numpy() -> None:
    """Compute with the numpy code from now on (a later ``warm_up`` chooses again)."""
    global _compiled
    _compiled = None
