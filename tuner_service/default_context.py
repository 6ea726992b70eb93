"""The context Ollama gives a request without ``num_ctx``, and what that figure rests on.

Learned: ``/api/ps`` showed it after such a request. Otherwise it is the operator's
``TUNER_DEFAULT_NUM_CTX`` (the server's ``OLLAMA_CONTEXT_LENGTH``), else assumed by Ollama's own rule
(``api/types.go`` DefaultOptions, ``server/routes.go`` Serve): 2048 up to v0.6.6, 4096 up to v0.15.4, then
by total VRAM (>= 47 GiB: 262144, >= 23 GiB: 32768, else 4096); an unknown version is read as a current
one. Ollama clamps every default to the model's training context.
"""

from __future__ import annotations

from dataclasses import dataclass

from .evidence import parse_version

LEARNED, OPERATOR, ASSUMED = "learned", "operator", "assumed"  # Benefit.default_num_ctx_basis
GIB = 1 << 30
FIXED_DEFAULTS = (((0, 6, 7), 2048), ((0, 15, 5), 4096))  # (first version without it, default before it)
VRAM_TIERS = ((47 * GIB, 262144), (23 * GIB, 32768))  # (total VRAM at least, default) from v0.15.5
SMALL_VRAM_DEFAULT = 4096


@dataclass(frozen=True)
class DefaultContext:
    num_ctx: int
    basis: str  # LEARNED, OPERATOR or ASSUMED

    @property
    def known(self) -> int:
        """The default as a baseline: learned or the operator's, else 0 (an assumption is no measure)."""
        return 0 if self.basis == ASSUMED else self.num_ctx


def ollama_rule(version: str, vram_total: int) -> int:
    """Ollama's default context for its version (``""`` = unknown) and total VRAM in bytes (0 = none or
    unknown), before the clamp to the training context."""
    parsed = parse_version(version) if version else None
    for first_without, default in FIXED_DEFAULTS:
        if parsed is not None and parsed < first_without:
            return default
    return next((default for least, default in VRAM_TIERS if vram_total >= least), SMALL_VRAM_DEFAULT)


def default_context(
    learned: int, operator: int, version: str, vram_total: int, training_context: int
) -> DefaultContext:
    """``learned``: from /api/ps (0 = not seen); ``operator``: TUNER_DEFAULT_NUM_CTX (0 = unset);
    ``training_context``: the model's (0 = unknown)."""
    if learned:
        return DefaultContext(learned, LEARNED)
    num_ctx, basis = (operator, OPERATOR) if operator else (ollama_rule(version, vram_total), ASSUMED)
    if training_context > 0:
        num_ctx = min(num_ctx, training_context)
    return DefaultContext(num_ctx, basis)
