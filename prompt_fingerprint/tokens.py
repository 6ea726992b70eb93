"""Tokenizer: one pass of ``\\w+|[^\\w\\s]`` over the lower-cased text, hashed per token with numpy.

ASCII text (the common case) is tokenised by classifying bytes with a lookup table built
from the regex itself, so both paths give identical tokens; other text goes through the
regex and is re-joined with single spaces. Each token gets a 64-bit hash: a polynomial
hash of its bytes from one segmented sum (no Python object per token on the ASCII path),
finished with the splitmix64 mixer. With normalisation on, a token made only of hex
digits and containing a decimal digit (numbers, hex ids, UUID and date parts) hashes
as one placeholder; the token count is unchanged. Once warmed up, a compiled kernel computes the
same hashes (``prompt_fingerprint.kernel``).
"""

from __future__ import annotations

import re
import time

import numpy as np

from .kernel import compiled_kernels

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_SPACE, _WORD, _PUNCT = 0, 1, 2
_P = 0x100000001B3  # odd multiplier: invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
PLACEHOLDER_HASH = np.uint64(0x5BD1E9955BD1E995)
_U64 = np.uint64


def _class_table(ascii_regex: bool) -> np.ndarray:
    """Byte → class. ASCII path: classes of the regex; joined path: every non-space byte is a word byte."""
    table = np.full(256, _WORD, np.uint8)
    for code in range(128):
        ch = chr(code)
        if re.fullmatch(r"\s", ch):
            table[code] = _SPACE
        elif ascii_regex and not re.fullmatch(r"\w", ch):
            table[code] = _PUNCT
    if not ascii_regex:
        table[:] = _WORD
        table[ord(" ")] = _SPACE
    return table


_ASCII_CLASSES = _class_table(ascii_regex=True)
_JOINED_CLASSES = _class_table(ascii_regex=False)
# Per byte: 1 for a decimal digit, 1 << 32 for a byte that is not a hex digit (summed per token).
_DIGIT, _NOT_HEX = 1, 1 << 32
_LITERAL_CODES = np.full(256, _NOT_HEX, np.int64)
_LITERAL_CODES[[ord(c) for c in "abcdef"]] = 0
_LITERAL_CODES[[ord(c) for c in "0123456789"]] = _DIGIT


class _Powers:
    """P**i and P**-i modulo 2**64, grown on demand."""

    def __init__(self) -> None:
        self.pow = np.ones(0, _U64)
        self.inv = np.ones(0, _U64)

    def ensure(self, n: int) -> None:
        if len(self.pow) >= n:
            return
        size = max(n, 2 * len(self.pow), 8192)
        with np.errstate(over="ignore"):
            self.pow = np.cumprod(np.full(size, _P, _U64), dtype=_U64) * _U64(_P_INV)
            self.inv = np.cumprod(np.full(size, _P_INV, _U64), dtype=_U64) * _U64(_P)


_POWERS = _Powers()


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (wrapping uint64 arithmetic)."""
    z = z ^ (z >> _U64(30))
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


# Characters tokenised per token wanted before the rest of a long text is only counted.
PREFIX_CHARS_PER_TOKEN = 16


def hash_tokens(text: str, max_tokens: int, normalize: bool) -> tuple[np.ndarray, int]:
    """(hashes of the first ``max_tokens`` tokens as uint64, token count of the text).

    A long text is tokenised only as far as the tokens wanted (``tokenised_prefix``); the rest is counted
    by ``approximate_count``: exact for ASCII text, and for other text it counts non-ASCII punctuation and
    spaces as word characters.
    """
    end, hashes, count = tokenised_prefix(text, max_tokens, normalize)
    return hashes, count + (approximate_count(text[end:]) if end < len(text) else 0)


def tokenised_prefix(text: str, max_tokens: int, normalize: bool) -> tuple[int, np.ndarray, int]:
    """(end of the prefix that is tokenised, hashes of its first ``max_tokens`` tokens, its token count).

    The prefix is cut at whitespace and grown until it holds more than ``max_tokens`` tokens; it is the
    whole text when that is short or holds no more."""
    limit = max(4096, PREFIX_CHARS_PER_TOKEN * max_tokens)
    while len(text) > limit:
        cut = _whitespace_before(text, limit)
        if cut == 0:
            break
        hashes, count = _hash_all(text[:cut], max_tokens, normalize)
        if count > max_tokens:
            return cut, hashes, count
        limit *= 4
    hashes, count = _hash_all(text, max_tokens, normalize)
    return len(text), hashes, count


def _whitespace_before(text: str, limit: int) -> int:
    """Index of the last ASCII whitespace before ``limit`` (tokens never span it), or 0."""
    return max(text.rfind(c, 0, limit) for c in " \n\t")


# Characters counted per step of ``approximate_count``; between steps it lets other threads run.
COUNT_CHUNK_CHARS = 1 << 16


def approximate_count(text: str) -> int:
    """Token count without a tokenizer: the ASCII classes on UTF-8 bytes, every non-ASCII byte a word byte.

    Counted COUNT_CHUNK_CHARS at a time, handing the GIL over after each chunk: counting a large text in a
    worker thread holds up the event loop's thread by one chunk at most, not by the switch interval."""
    count = 0
    word_before = False  # the previous chunk ended inside a word
    for start in range(0, len(text), COUNT_CHUNK_CHARS):
        if start:
            time.sleep(0)
        data = text[start : start + COUNT_CHUNK_CHARS].encode("utf-8", "surrogatepass")
        classes = np.take(_ASCII_CLASSES, np.frombuffer(data, np.uint8))
        word = classes == _WORD
        count += int((classes == _PUNCT).sum()) + int((word[1:] & ~word[:-1]).sum())
        count += int(bool(word[0]) and not word_before)
        word_before = bool(word[-1])
    return count


def _hash_all(text: str, max_tokens: int, normalize: bool) -> tuple[np.ndarray, int]:
    """(hashes of the first ``max_tokens`` tokens as uint64, exact token count of the text)."""
    lowered = text.lower()
    if lowered.isascii():
        data, table = lowered.encode("ascii"), _ASCII_CLASSES
    else:
        data, table = " ".join(TOKEN_RE.findall(lowered)).encode("utf-8"), _JOINED_CLASSES
    raw = np.frombuffer(data, np.uint8)
    kernels = compiled_kernels()
    if kernels is not None:
        hashes, count = kernels.token_hashes(raw, table, max_tokens, normalize)
        return hashes, int(count)
    return _numpy_hash_all(raw, table, max_tokens, normalize)


def _numpy_hash_all(raw: np.ndarray, table: np.ndarray, max_tokens: int, normalize: bool) -> tuple[np.ndarray, int]:
    """``_hash_all`` of the bytes ``raw`` with the byte classes ``table``, with numpy: per-token sums by one
    reduceat from each token's start, with the spaces between tokens weighing nothing."""
    classes = np.take(table, raw)
    word = classes == _WORD
    prev_word = np.concatenate(([False], word[:-1]))
    starts = np.flatnonzero((classes == _PUNCT) | (word & ~prev_word))
    count = len(starts)
    if count == 0:
        return np.zeros(0, _U64), 0
    used = int(starts[max_tokens]) if count > max_tokens else len(raw)  # only spaces after the last token
    starts = starts[:max_tokens]
    in_token = classes[:used] != _SPACE
    _POWERS.ensure(used)
    with np.errstate(over="ignore"):
        weighted = (raw[:used].astype(_U64) + _U64(1)) * _POWERS.pow[:used] * in_token
        hashes = np.add.reduceat(weighted, starts) * np.take(_POWERS.inv, starts)
    if normalize:
        codes = np.add.reduceat(np.take(_LITERAL_CODES, raw[:used]) * in_token, starts)
        hashes[(codes > 0) & (codes < _NOT_HEX)] = PLACEHOLDER_HASH
    return mix64(hashes), count


def count_tokens(text: str) -> int:
    """Token count of ``text`` as ``hash_tokens`` counts it."""
    return hash_tokens(text, 1, normalize=False)[1] if text else 0
