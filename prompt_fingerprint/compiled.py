"""Compiled (numba) token hashing and windowed SimHash: one pass each, bit for bit the numpy code's results.

Imported only through ``prompt_fingerprint.kernel``, which falls back to the numpy code when numba is absent.
Compiled code is cached on disk (numba's cache: ``NUMBA_CACHE_DIR``, else ``__pycache__`` beside this file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

from .simhash import _LANES, _MAX_LANE_ROWS, _MULTIPLIER_ARRAY
from .tokens import _LITERAL_CODES, _NOT_HEX, _P, _PUNCT, _SPACE, _WORD, PLACEHOLDER_HASH, mix64

_F = TypeVar("_F", bound=Callable[..., Any])


def _compile(function: _F) -> _F:
    """numba's nopython compilation, without the GIL, cached on disk."""
    return cast(_F, numba.njit(cache=True, nogil=True)(function))


_mix64: Any = _compile(mix64)  # the numpy finaliser, compiled for one uint64
_ONE = np.uint64(1)
_BYTE = np.uint64(0xFF)


@_compile
def token_hashes(raw: Any, classes: Any, max_tokens: int, normalize: bool) -> Any:
    """(hashes of the first ``max_tokens`` tokens of ``raw`` as uint64, token count of ``raw``).

    A token is one punctuation byte or a run of word bytes (``classes`` maps byte → class). Its hash is
    the polynomial sum of (byte + 1) * P**i over its bytes, replaced by the placeholder when normalising a
    token of hex digits with a decimal digit among them (by its sum of literal codes), then mixed with splitmix64.
    """
    n = len(raw)
    out = np.empty(min(max_tokens, n), np.uint64)
    p = np.uint64(_P)
    count = 0
    i = 0
    while i < n:
        kind = classes[raw[i]]
        if kind == _SPACE:
            i += 1
            continue
        h = np.uint64(0)
        power = _ONE
        codes = 0
        while True:  # the token's bytes, hashed as they are read
            byte = raw[i]
            h += (np.uint64(byte) + _ONE) * power
            power *= p
            codes += _LITERAL_CODES[byte]
            i += 1
            if kind != _WORD or i == n or classes[raw[i]] != _WORD:
                break
        if count < max_tokens:
            out[count] = _mix64(PLACEHOLDER_HASH if normalize and 0 < codes < _NOT_HEX else h)
        count += 1
    return out[: min(count, max_tokens)].copy(), count


@_compile
def token_count(raw: Any, classes: Any, word_before: bool) -> Any:
    """(tokens starting in ``raw``, whether it ends inside a word): punctuation bytes and word runs, a run
    continued from before ``raw`` (``word_before``) not counted again."""
    count = np.int64(0)
    before = np.int64(1 if word_before else 0)
    for i in range(raw.shape[0]):  # without branches: text decides no jump (about 3x faster)
        kind = classes[raw[i]]
        word = np.int64(kind == _WORD)
        count += np.int64(kind == _PUNCT) + (word & (1 - before))
        before = word
    return count, before == 1


@_compile
def simhash(hashes: Any, window_shingles: Any, shingle_size: int) -> Any:
    """SimHash (uint64) of the distinct shingles among the first ``window_shingles[w]`` shingles, per window.

    Distinct shingles are found with an open-addressing table; their bits are summed in byte lanes
    (SWAR, as in the numpy code) flushed to 64 counters every 255 shingles and read at every window end.
    """
    n_shingles = window_shingles[-1]
    size = 16
    while size < 2 * n_shingles:
        size *= 2
    mask = np.uint64(size - 1)
    keys = np.empty(size, np.uint64)
    taken = np.zeros(size, np.bool_)
    ones = np.zeros(64, np.int64)
    lanes = np.zeros(8, np.uint64)
    in_lanes = 0
    distinct = 0
    out = np.zeros(len(window_shingles), np.uint64)
    window = 0
    for i in range(n_shingles):
        combined = np.uint64(0)
        for offset in range(shingle_size):
            combined += hashes[i + offset] * _MULTIPLIER_ARRAY[offset]
        shingle = _mix64(combined)
        slot = shingle & mask
        while taken[slot] and keys[slot] != shingle:
            slot = (slot + _ONE) & mask
        if not taken[slot]:
            taken[slot] = True
            keys[slot] = shingle
            distinct += 1
            for bit in range(8):
                lanes[bit] += (shingle >> np.uint64(bit)) & _LANES
            in_lanes += 1
            if in_lanes == _MAX_LANE_ROWS:
                _flush(lanes, ones)
                in_lanes = 0
        while window < len(window_shingles) and window_shingles[window] == i + 1:
            fp = np.uint64(0)
            for bit in range(64):
                if 2 * (ones[bit] + _lane_count(lanes, bit)) > distinct:
                    fp |= _ONE << np.uint64(bit)
            out[window] = fp
            window += 1
    return out


@_compile
def _flush(lanes: Any, ones: Any) -> None:
    """Add the byte-lane counts to the 64 counters (bit 8b + j is byte b of lane j) and clear the lanes."""
    for bit in range(64):
        ones[bit] += _lane_count(lanes, bit)
    lanes[:] = 0


@_compile
def _lane_count(lanes: Any, bit: int) -> Any:
    """Count of shingles with ``bit`` set held in the byte lanes: byte ``bit // 8`` of lane ``bit % 8``."""
    return np.int64((lanes[bit % 8] >> np.uint64(8 * (bit // 8))) & _BYTE)
