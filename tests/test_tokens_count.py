"""The cheap token count of a long text's tail, counted in chunks: chunk borders never split or merge tokens."""

from __future__ import annotations

import random

from prompt_fingerprint.tokens import COUNT_CHUNK_CHARS, _hash_all, approximate_count


def test_chunked_count_equals_the_tokenizers_count_of_ascii_text() -> None:
    rng = random.Random(3)
    pieces = ["a" * (COUNT_CHUNK_CHARS + 5), " ", "x, y.", " " * (COUNT_CHUNK_CHARS - 2), "long" * 20_000]
    pieces += [rng.choice(["word", "ab12", ",", ".", " ", "\n", "(x)"]) for _ in range(60_000)]
    text = "".join(pieces)
    assert len(text) > 3 * COUNT_CHUNK_CHARS
    for cut in (0, 1, COUNT_CHUNK_CHARS - 1, COUNT_CHUNK_CHARS, COUNT_CHUNK_CHARS + 7):
        assert approximate_count(text[cut:]) == _hash_all(text[cut:], 1, normalize=False)[1]
    assert approximate_count("") == 0


def test_a_word_across_a_chunk_border_counts_once() -> None:
    assert approximate_count("é" * (3 * COUNT_CHUNK_CHARS)) == 1
    assert approximate_count("é" * COUNT_CHUNK_CHARS + " " + "é") == 2
