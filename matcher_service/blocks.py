"""Pigeonhole block index: which 16-bit block values to probe for a fingerprint.

Exactness. A 64-bit fingerprint is cut into 4 blocks of 16 bits. If two fingerprints
differ in d <= k bits, the d differing bits fall into 4 blocks, so some block holds at
most floor(k / 4) of them (otherwise d >= 4 * (floor(k/4) + 1) > k). Probing, for every
block, each value within Hamming distance r = floor(k / 4) of the query's block therefore
finds every stored fingerprint within distance k; the recheck ``bit_count(fp # q) <= k``
then removes the false candidates. So the lookup returns exactly the fingerprints within
k(W): no false negatives, no false positives. r = 0 for k <= 3 (4 probes), r = 1 for
k <= 7 (4 * 17 = 68 probes), r = 2 for k <= 11 (4 * 137 = 548 probes). A probe is a key
(window << 16 | value) of the block's index: one ``k_i = ANY(keys)`` scan per block position.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

BLOCKS = 4
BLOCK_BITS = 16
BLOCK_MASK = (1 << BLOCK_BITS) - 1


def to_signed(fp: int) -> int:
    """Unsigned 64-bit fingerprint → Postgres bigint."""
    return fp - (1 << 64) if fp >= 1 << 63 else fp


def to_unsigned(fp: int) -> int:
    """Postgres bigint → unsigned 64-bit fingerprint."""
    return fp + (1 << 64) if fp < 0 else fp


def block_values(fp: int) -> list[int]:
    """The 4 blocks of an unsigned fingerprint, lowest bits first (as the table's b0..b3)."""
    return [(fp >> (BLOCK_BITS * i)) & BLOCK_MASK for i in range(BLOCKS)]


@functools.lru_cache(maxsize=4)
def variant_masks(radius: int) -> np.ndarray:
    """XOR masks of every 16-bit pattern with at most ``radius`` bits set (0 first)."""
    masks = [0]
    for bits in range(1, radius + 1):
        for combo in itertools.combinations(range(BLOCK_BITS), bits):
            masks.append(sum(1 << b for b in combo))
    return np.array(masks, np.int64)


def probe_key(window: int, value: int) -> int:
    """Index key of one block: window in the high bits, the 16-bit block value in the low ones."""
    return (window << BLOCK_BITS) | value


@dataclass(frozen=True)
class Probes:
    """Probe keys per window (in the query's window order), then per block position (column k{i})."""

    per_window: tuple[tuple[list[int], ...], ...]

    @property
    def count(self) -> int:
        return sum(len(keys) for window in self.per_window for keys in window)


def build_probes(windows: tuple[int, ...], fingerprints: tuple[int, ...], thresholds: list[int]) -> Probes:
    """Every block key needed to find all fingerprints within k of each window's query."""
    per_window = []
    for w, fp, k in zip(windows, fingerprints, thresholds):
        masks = variant_masks(k // BLOCKS)
        per_window.append(tuple(((masks ^ b) | (w << BLOCK_BITS)).tolist() for b in block_values(fp)))
    return Probes(tuple(per_window))
