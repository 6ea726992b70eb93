"""Fingerprints and Match keys are those of algorithm revision 3 as first released, byte for byte.

The expected values were computed by that code (``matcher_service.simhash`` at the commit before the
``prompt_fingerprint`` module existed); a change here changes what stored templates match, so it needs a
new ``ALGORITHM_REVISION``, not new expected values. Both kernels (numpy and compiled) must give them.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from prompt_fingerprint import ALGORITHM_REVISION, fingerprint, match_key

_WORDS = (
    "the order status id 12345 deadbeef 2024-01-05 You are a helpful assistant . , ; : ( ) [ ] { } "
    "\" ' Grüße naïve café 東京 мир Ça — « » \u03b1 \u03b2 🙂 tab\t new\nline e9f0 0x1f 3.14 user: assistant: "
    "ÉCOLE İstanbul ß ǅ ﬁ 1e5 _under_score snake_case CamelCase"
).split(" ")


def golden_corpus() -> list[str]:
    """80 texts: tiny, non-ASCII, ASCII-only, around every window, long, and chats with a system head."""
    rng = random.Random(20261205)
    texts = ["a", "hi there", "x" * 3, "  . ", "é", "東京", "1 2 3 4", "ﬁ İ ß"]
    for n in (1, 2, 3, 4, 5, 15, 16, 17, 31, 33, 100, 255, 257, 700, 1023, 1024, 1025, 1500, 3000, 20000):
        texts.append(" ".join(rng.choice(_WORDS) for _ in range(n)))
        texts.append("".join(rng.choice(_WORDS) + rng.choice(" \n\t,.") for _ in range(n)))
        texts.append(" ".join(rng.choice(_WORDS[:20]) for _ in range(n)))
    for n in (10, 40, 300, 1200):
        head = "system: " + " ".join(rng.choice(_WORDS[:20]) for _ in range(n)) + "\n"
        texts.append(head + "user: " + " ".join(rng.choice(_WORDS) for _ in range(n)) + "\n")
        texts.append(head + "user: hi\nassistant: " + " ".join(rng.choice(_WORDS) for _ in range(2 * n)) + "\n")
        texts.append(head)
    return texts


pytestmark = pytest.mark.usefixtures("fingerprint_kernel")


def test_fingerprints_of_a_few_prompts() -> None:
    corpus = golden_corpus()
    short, long, chat = (fingerprint(corpus[i], 4, True) for i in (1, 49, 77))
    assert (short.windows, short.fingerprints, short.unit_count, short.head_units) == ((2,), (0x80DEF30A395FCBE,), 2, 0)
    assert long.windows == (16, 32, 64, 128, 256, 512) and long.unit_count == 836 and long.head_units == 0
    assert long.fingerprints == (
        0x85239C8DB88A5E3D, 0x53218D8B9C9A0B7C, 0x5333A59EBA8A906E, 0x10739E9EB643B055, 0x145A3E9EB15B90E5,
        0x1056963A95CB98E5,
    )  # fmt: skip
    assert chat.windows == (16, 32, 64, 128, 256, 512, 1024) and (chat.unit_count, chat.head_units) == (2941, 1458)
    assert chat.fingerprints == (
        0xF7A8AFC8D6DC7762, 0xD10185D8C6D12473, 0xC7918E50CED44762, 0xE3B2E8D264DC0A12, 0x937B4011C554AA1A,
        0xF31344304D5E0C3A, 0x701356B0640C0832,
    )  # fmt: skip
    key = match_key(corpus[77])
    assert key.key == bytes([ALGORITHM_REVISION]) + bytes.fromhex("010400afebefc2b5182c9806bcede19f337244")
    assert (key.unit_count, key.read_end, key.units_after) == (2941, 9580, 399)


def test_every_setting_over_the_corpus() -> None:
    """Fingerprints for shingle sizes 3-5 with and without normalisation, and Match keys (their revision
    byte aside), over all 80 texts, digested."""
    digest = hashlib.sha256()
    for text in golden_corpus():
        key = match_key(text)
        assert key.key[0] == ALGORITHM_REVISION
        digest.update(repr((key.key[1:], key.unit_count, key.read_end, key.units_after)).encode())
        for shingle_size in (3, 4, 5):
            for normalize in (False, True):
                f = fingerprint(text, shingle_size, normalize)
                digest.update(repr((f.version, f.windows, f.fingerprints, f.unit_count, f.head_units)).encode())
    assert digest.hexdigest() == "d4fba2c563ce4aacb3bc69fd254fcc8b0abc62a2badd88c668ad89ade8f73e80"
