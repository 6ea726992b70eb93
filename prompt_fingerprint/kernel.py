"""Which code computes token hashes and SimHashes: the compiled kernels (numba) or the numpy code.

Both give the same bits. The compiled kernels are used only after ``warm_up`` has compiled them (or loaded
them from numba's disk cache) and checked them against the numpy code, so a request never waits for a
compiler and a stale cache (numba does not see changed constants of other modules) cannot change a
fingerprint; until then, when numba is absent, when compiling fails or the check does, or when a service
is configured for it (``OPTIMIZER_FINGERPRINT_KERNEL=numpy``), the numpy code runs.
"""

from __future__ import annotations

import logging
from types import ModuleType

log = logging.getLogger(__name__)

COMPILED, NUMPY = "compiled", "numpy"

_compiled: ModuleType | None = None


def compiled_kernels() -> ModuleType | None:
    """The module of compiled kernels when warmed up and chosen, else None (use numpy)."""
    return _compiled


def active_kernel() -> str:
    """``compiled`` or ``numpy``: the code fingerprints are computed with now."""
    return NUMPY if _compiled is None else COMPILED


def warm_up(kernel: str = COMPILED) -> str:
    """Use ``kernel`` (``compiled`` or ``numpy``) from now on; the compiled one is first compiled (or loaded
    from numba's cache) and checked against the numpy code. Returns the kernel in use.

    Never raises for a missing or failing numba: it logs a warning and keeps numpy."""
    global _compiled
    _compiled = None
    if kernel != COMPILED:
        return NUMPY
    try:
        from . import compiled as module  # imports numba (~100 MiB of LLVM per process)

        _compiled = module
        results = _check_results()  # compiles the kernels (or loads them from the cache)
    except Exception as exc:  # noqa: BLE001 - numba missing, incompatible or failing to compile: numpy does the same
        _compiled = None
        log.warning("fingerprint kernels not compiled (%s: %s): using numpy", type(exc).__name__, exc)
        return NUMPY
    _compiled = None
    if results != _check_results():
        log.error("compiled fingerprint kernels disagree with the numpy code (a stale NUMBA_CACHE_DIR?): using numpy")
        return NUMPY
    _compiled = module
    return COMPILED


# Check texts: both tokenizer paths (ASCII and not), literals normalised, punctuation, every window, more than
# 255 distinct shingles (the byte lanes' flush), a chat's head, fewer tokens than a shingle.
_CHECK_TEXTS = (
    " ".join(f"Word{i} {i}x{i:04x} ok-{i % 7}; (e{i:x})" for i in range(260)),
    " ".join(f"Grüße{i % 13} {i}, naïve 東京{i % 5} ß{i:03}" for i in range(260)),
    "system: be brief\nuser: hi",
    "a b",
)


def _check_results() -> list[object]:
    """Fingerprints (two settings), Match keys and token counts of the check texts, with the kernel in use:
    every kernel runs here once, before any request does."""
    from .fingerprints import fingerprint, match_key
    from .tokens import approximate_count

    return [
        (fingerprint(t, 4, True), fingerprint(t, 3, False), match_key(t), approximate_count(t)) for t in _CHECK_TEXTS
    ]


def use_numpy() -> None:
    """Compute with the numpy code from now on (a later ``warm_up`` chooses again)."""
    global _compiled
    _compiled = None
