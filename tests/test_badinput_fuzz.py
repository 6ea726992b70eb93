"""Short fuzz of the fingerprint and canonical-text code (the long run is `python -m bench.fuzz`)."""

from __future__ import annotations

from collections import Counter

from bench.fuzz import build

EXAMPLES = 150


def test_fingerprint_and_canonical_text_properties_hold() -> None:
    tried: Counter[str] = Counter()
    for prop in build(EXAMPLES, tried).values():
        prop()
    print(f"\nfuzz inputs tried: {dict(tried)} total {sum(tried.values())}")
    assert all(n >= EXAMPLES for n in tried.values())
