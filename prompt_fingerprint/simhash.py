"""64-bit SimHash of the distinct token shingles inside every prefix window, in one vectorised pass."""

from __future__ import annotations

import functools

import numpy as np

from .kernel import compiled_kernels
from .tokens import mix64

# Distinct odd multipliers combining the k token hashes of a shingle (order-sensitive).
_SHINGLE_MULTIPLIERS = tuple(
    np.uint64(m)
    for m in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
)
_MULTIPLIER_ARRAY = np.array(_SHINGLE_MULTIPLIERS, np.uint64)

_LANES = np.uint64(0x0101010101010101)  # one bit per byte: 8 counters of 8 bits in a uint64
_BIT_SHIFTS = np.arange(8, dtype=np.uint64)
_MAX_LANE_ROWS = 255  # a byte lane counts at most 255 shingles before it would overflow


@functools.lru_cache(maxsize=64)
def _segments(window_shingles: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Segment starts (window ends plus lane-overflow cuts) and the segment ending each window."""
    cuts = set(range(0, window_shingles[-1], _MAX_LANE_ROWS)) | {0, *window_shingles[:-1]}
    starts = np.array(sorted(cuts))
    last_segment = np.searchsorted(starts, np.array(window_shingles), side="left") - 1
    return starts, last_segment


def simhash_windows(token_hashes: np.ndarray, windows: list[int], shingle_size: int) -> np.ndarray:
    """SimHash (uint64) of the set of distinct shingles inside each prefix window of ``token_hashes``.

    Each distinct shingle counts once (at its first occurrence), so repeated boilerplate (the JSON
    structure of tool schemas, say) does not outweigh the text that tells prompts apart. Shingle hashes
    are spread into byte lanes (bit j of byte b in lane j), summed per segment with one reduceat (SWAR:
    8 counters per uint64), and a cumulative sum over segments gives every window's per-bit counts; the
    majority of each bit over the window's distinct shingles is the SimHash. Once warmed up, a compiled
    kernel computes the same bits in one pass (``prompt_fingerprint.kernel``).
    """
    hashes = token_hashes[: windows[-1]]
    if len(hashes) < shingle_size:
        hashes = np.concatenate((hashes, np.zeros(shingle_size - len(hashes), np.uint64)))
    window_shingles = tuple(max(w - shingle_size + 1, 1) for w in windows)
    kernels = compiled_kernels()
    if kernels is not None and shingle_size <= len(_SHINGLE_MULTIPLIERS):
        fps: np.ndarray = kernels.simhash(hashes, np.array(window_shingles), shingle_size)
        return fps
    return _numpy_simhash(hashes, window_shingles, shingle_size)


def _numpy_simhash(hashes: np.ndarray, window_shingles: tuple[int, ...], shingle_size: int) -> np.ndarray:
    """``simhash_windows`` of ``hashes`` (at least ``shingle_size`` of them) with numpy."""
    n_shingles = len(hashes) - shingle_size + 1
    with np.errstate(over="ignore"):
        combined = hashes[:n_shingles] * _SHINGLE_MULTIPLIERS[0]
        for offset in range(1, shingle_size):
            combined += hashes[offset : offset + n_shingles] * _SHINGLE_MULTIPLIERS[offset]
        shingles = mix64(combined)
    starts, last_segment = _segments(window_shingles)
    first = np.zeros(n_shingles, np.uint64)
    first[np.unique(shingles, return_index=True)[1]] = 1
    distinct = np.cumsum(first)[np.array(window_shingles) - 1].astype(np.int64)
    lanes = (shingles * first)[:, None] >> _BIT_SHIFTS  # a repeated shingle is 0: no bit counted
    lanes &= _LANES
    sums = np.add.reduceat(lanes, starts, axis=0)
    per_bit = sums.view(np.uint8).reshape(len(starts), 8, 8).transpose(0, 2, 1).reshape(len(starts), 64)
    ones = np.cumsum(per_bit, axis=0, dtype=np.int32)[last_segment]
    majority = (2 * ones > distinct[:, None]).astype(np.uint8)
    return np.packbits(majority, axis=1, bitorder="little").view("<u8").ravel()
