"""64-bit SimHash of token shingles for every prefix window, in one vectorised pass."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from .settings import WINDOWS
from .tokens import hash_tokens, mix64

ALGORITHM_REVISION = 1  # bump when the tokenizer, hashing or shingling changes
# Distinct odd multipliers combining the k token hashes of a shingle (order-sensitive).
_SHINGLE_MULTIPLIERS = tuple(
    np.uint64(m) for m in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                           0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
)


def algorithm_version(shingle_size: int, normalize: bool) -> int:
    """Version stored with every fingerprint: revision, shingle size and normalisation."""
    return ALGORITHM_REVISION * 100 + shingle_size * 10 + int(normalize)


def windows_for(unit_count: int) -> list[int]:
    """Windows computed for a prompt of ``unit_count`` tokens (its own length when shorter than all)."""
    fitting = [w for w in WINDOWS if w <= unit_count]
    return fitting or [unit_count]


@dataclass(frozen=True)
class Fingerprints:
    version: int
    windows: tuple[int, ...]
    fingerprints: tuple[int, ...]  # unsigned 64-bit, one per window
    unit_count: int

    @property
    def largest_window(self) -> int:
        return self.windows[-1]


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
    """SimHash (uint64) of the shingles inside each prefix window of ``token_hashes``.

    Shingle hashes are spread into byte lanes (bit j of byte b in lane j), summed per
    segment with one reduceat (SWAR: 8 counters per uint64), and a cumulative sum over
    segments gives every window's per-bit counts; the majority of each bit is the SimHash.
    """
    hashes = token_hashes[: windows[-1]]
    if len(hashes) < shingle_size:
        hashes = np.concatenate((hashes, np.zeros(shingle_size - len(hashes), np.uint64)))
    n_shingles = len(hashes) - shingle_size + 1
    with np.errstate(over="ignore"):
        combined = hashes[:n_shingles] * _SHINGLE_MULTIPLIERS[0]
        for offset in range(1, shingle_size):
            combined += hashes[offset : offset + n_shingles] * _SHINGLE_MULTIPLIERS[offset]
        shingles = mix64(combined)
    window_shingles = tuple(max(w - shingle_size + 1, 1) for w in windows)
    starts, last_segment = _segments(window_shingles)
    lanes = (shingles[:, None] >> _BIT_SHIFTS) & _LANES
    sums = np.add.reduceat(lanes, starts, axis=0)
    per_bit = sums.view(np.uint8).reshape(len(starts), 8, 8).transpose(0, 2, 1).reshape(len(starts), 64)
    ones = np.cumsum(per_bit, axis=0, dtype=np.int32)[last_segment]
    majority = (2 * ones > np.array(window_shingles)[:, None]).astype(np.uint8)
    return np.packbits(majority, axis=1, bitorder="little").view("<u8").ravel()


def fingerprint(text: str, shingle_size: int, normalize: bool) -> Fingerprints:
    """All window fingerprints of ``text`` (which must contain at least one token)."""
    token_hashes, unit_count = hash_tokens(text, WINDOWS[-1], normalize)
    if unit_count == 0:
        raise ValueError("text contains no tokens")
    windows = windows_for(unit_count)
    fps = simhash_windows(token_hashes, windows, shingle_size)
    return Fingerprints(algorithm_version(shingle_size, normalize), tuple(windows),
                        tuple(int(x) for x in fps), unit_count)


def match_key(text: str) -> tuple[bytes, int]:
    """(a digest of everything Match's answer depends on, the text's unit count).

    Match reads only the text's windows (fixed by its unit count) and the tokens inside the largest one:
    the fingerprints of every window, normalised or not and whatever the shingle size, are functions of
    those tokens. So two texts with the same key get the same Match answer from the same database, and the
    plugin can reuse a recent answer (``proxy_plugin.match_memo``). Raw token hashes are digested: equal
    raw tokens imply equal normalised ones. The text must contain at least one token.
    """
    token_hashes, unit_count = hash_tokens(text, WINDOWS[-1], normalize=False)
    largest = windows_for(unit_count)[-1]
    digest = hashlib.blake2b(token_hashes[:largest].tobytes(), digest_size=16).digest()
    return largest.to_bytes(2, "big") + digest, unit_count
