"""Prompt fingerprints: the tokenizer, token hashing and windowed SimHash that the matcher stores and the
plugin keys its Match memo on. One algorithm, versioned by ``ALGORITHM_REVISION``, computed by numpy code or,
after ``warm_up``, by compiled kernels (numba) giving the same bits.
"""

from __future__ import annotations

from .fingerprints import (
    ALGORITHM_REVISION,
    DEFAULT_NORMALIZE,
    DEFAULT_SHINGLE_SIZE,
    OFF_LOOP_CHARS,
    WINDOWS,
    FingerprintSet,
    MatchKey,
    algorithm_version,
    chat_head_end,
    fingerprint,
    fingerprint_off_loop,
    match_key,
    match_key_off_loop,
    revision_of,
    windows_for,
)
from .kernel import active_kernel, warm_up
from .tokens import TOKEN_RE, approximate_count, count_tokens, hash_tokens

__all__ = [
    "ALGORITHM_REVISION",
    "DEFAULT_NORMALIZE",
    "DEFAULT_SHINGLE_SIZE",
    "OFF_LOOP_CHARS",
    "TOKEN_RE",
    "WINDOWS",
    "FingerprintSet",
    "MatchKey",
    "active_kernel",
    "algorithm_version",
    "approximate_count",
    "chat_head_end",
    "count_tokens",
    "fingerprint",
    "fingerprint_off_loop",
    "hash_tokens",
    "match_key",
    "match_key_off_loop",
    "revision_of",
    "warm_up",
    "windows_for",
]
