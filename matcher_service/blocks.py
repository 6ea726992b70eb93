"""Pigeonhole block index: which 16-bit block values to probe for a fingerprint.

Exactness (generalised pigeonhole). A 64-bit fingerprint is cut into 4 blocks of 16 bits,
and block i is probed with every value within Hamming distance r_i of the query's block,
where the radii satisfy sum(r_i + 1) > k. If a stored fingerprint differs from the query in
d <= k bits and no probe found it, every block i holds at least r_i + 1 differing bits, so
d >= sum(r_i + 1) > k: a contradiction. So the probes find every stored fingerprint within
distance k; the recheck ``bit_count(fp # q) <= k`` then removes the false candidates, and the
lookup returns exactly the fingerprints within k(W): no false negatives, no false positives.
The radii are the smallest with sum(r_i + 1) = k + 1, as even as possible (``radii``; a
radius of -1 probes nothing, for k < 3):
k=3 → (0,0,0,0), 4 probes; k=4 → (1,0,0,0), 20; k=5 → (1,1,0,0), 36; k=6 → (1,1,1,0), 52;
k=7 → (1,1,1,1), 68; k=11 → (2,2,2,2), 548. A probe is a key (window << 16 | value) of the
block's index: one ``k_i = ANY(keys)`` scan per block position.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

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


@functools.lru_cache(maxsize=16)
def variant_masks(radius: int) -> tuple[int, ...]:
    """XOR masks of every 16-bit pattern with at most ``radius`` bits set (0 first; none when radius < 0)."""
    masks = [0] if radius >= 0 else []
    for bits in range(1, radius + 1):
        for combo in itertools.combinations(range(BLOCK_BITS), bits):
            masks.append(sum(1 << b for b in combo))
    return tuple(masks)


@functools.lru_cache(maxsize=16)
def radii(k: int) -> tuple[int, ...]:
    """Probe radius per block: sum(r_i + 1) = k + 1 (the pigeonhole bound), spread evenly."""
    total = k + 1
    return tuple(total // BLOCKS + (i < total % BLOCKS) - 1 for i in range(BLOCKS))


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
    """Every block key needed to find all fingerprints within k of each window's query.

    Plain ints: at most 17 keys per block for the default k(W), where numpy's per-call cost dominated.
    """
    per_window = []
    for w, fp, k in zip(windows, fingerprints, thresholds):
        base = probe_key(w, 0)
        per_window.append(
            tuple([base | (mask ^ b) for mask in variant_masks(r)] for r, b in zip(radii(k), block_values(fp)))
        )
    return Probes(tuple(per_window))
