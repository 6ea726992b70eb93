"""A prompt's fingerprints (64-bit SimHash of token shingles per prefix window) and its Match key."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from .simhash import simhash_windows
from .tokens import approximate_count, count_tokens, hash_tokens, tokenised_prefix

ALGORITHM_REVISION = 3  # bump when the tokenizer, hashing, shingling or the window set changes
WINDOWS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)  # prefix windows, in tokens
DEFAULT_SHINGLE_SIZE = 4
DEFAULT_NORMALIZE = True


def algorithm_version(shingle_size: int, normalize: bool) -> int:
    """Version stored with every fingerprint: revision, shingle size and normalisation."""
    return ALGORITHM_REVISION * 100 + shingle_size * 10 + int(normalize)


def revision_of(version: int) -> int:
    """The algorithm revision inside a version from ``algorithm_version``."""
    return version // 100


def windows_for(unit_count: int) -> list[int]:
    """Windows computed for a prompt of ``unit_count`` tokens (its own length when shorter than all)."""
    fitting = [w for w in WINDOWS if w <= unit_count]
    return fitting or [unit_count]


_SYSTEM = "system: "
_TURNS = ("\nuser: ", "\nassistant: ", "\ntool: ")


def chat_head_end(text: str) -> int:
    """End of the leading system message(s) of a chat's canonical text (``"{role}: {content}\n"`` per
    message), or 0 when the text does not open with one followed by another role's message."""
    if not text.startswith(_SYSTEM):
        return 0
    ends = [i for i in (text.find(marker, len(_SYSTEM)) for marker in _TURNS) if i >= 0]
    return min(ends) + 1 if ends else 0


@dataclass(frozen=True)
class FingerprintSet:
    version: int
    windows: tuple[int, ...]
    fingerprints: tuple[int, ...]  # unsigned 64-bit, one per window
    unit_count: int
    head_units: int = 0  # tokens fingerprinted when they are a chat's system head (0: the whole text's prefix)

    @property
    def largest_window(self) -> int:
        return self.windows[-1]


def fingerprint(
    text: str, shingle_size: int = DEFAULT_SHINGLE_SIZE, normalize: bool = DEFAULT_NORMALIZE
) -> FingerprintSet:
    """All window fingerprints of ``text`` (which must contain at least one token).

    A chat whose canonical text opens with system messages is fingerprinted on those only: the system
    prompt is the fixed head of a chat app, whatever its length, and the history after it differs
    from one conversation (and turn) to the next. The unit count is always the whole text's.
    """
    head_end = chat_head_end(text)
    token_hashes, fingerprinted = hash_tokens(text[:head_end] if head_end else text, WINDOWS[-1], normalize)
    if fingerprinted == 0:
        raise ValueError("text contains no tokens")
    unit_count = fingerprinted + count_tokens(text[head_end:]) if head_end else fingerprinted
    windows = windows_for(fingerprinted)
    fps = simhash_windows(token_hashes, windows, shingle_size)
    return FingerprintSet(
        algorithm_version(shingle_size, normalize),
        tuple(windows),
        tuple(fps.tolist()),
        unit_count,
        fingerprinted if head_end else 0,
    )


class MatchKey(NamedTuple):
    """What the plugin needs of a text before Match: its key, its unit count, and how much of it to send."""

    key: bytes  # the algorithm revision and a digest of everything Match's answer depends on
    unit_count: int
    read_end: int  # Match reads text[:read_end] (the whole text when it is short)
    units_after: int  # tokens of text[read_end:], counted as Match counts them


# A chat's text is cut no closer after its head than this: the turn marker ("\nassistant: ") stays in.
_MARKER_CHARS = 16


def match_key(text: str) -> MatchKey:
    """The text's Match key and unit count, and the start of it Match needs (the rest is only counted).

    Match reads only the text's windows (fixed by the tokens it fingerprints: the whole text's, or a
    chat's system head, see ``fingerprint``) and the tokens inside the largest one:
    the fingerprints of every window, normalised or not and whatever the shingle size, are functions of
    those tokens. So two texts with the same key get the same Match answer from the same database, and the
    plugin can reuse a recent answer (``proxy_plugin.match_memo``). Raw token hashes are digested: equal
    raw tokens imply equal normalised ones. ``text[:read_end]`` with ``units_after`` gives Match the same
    fingerprints and unit count as the whole text: it is cut where ``fingerprint`` stops tokenising. The
    text must contain at least one token.
    """
    head_end = chat_head_end(text)
    head = text[:head_end] if head_end else text
    end, token_hashes, fingerprinted = tokenised_prefix(head, WINDOWS[-1], normalize=False)
    if head_end:
        fingerprinted += approximate_count(head[end:]) if end < len(head) else 0
        rest = text[head_end:]
        rest_end, _hashes, before = tokenised_prefix(rest, 1, normalize=False)
        if rest_end < _MARKER_CHARS:
            rest_end, before = len(rest), count_tokens(rest)
        read_end, before = head_end + rest_end, fingerprinted + before
    else:
        read_end, before = end, fingerprinted
    after = approximate_count(text[read_end:]) if read_end < len(text) else 0
    largest = windows_for(fingerprinted if head_end else before + after)[-1]
    digest = hashlib.blake2b(token_hashes[:largest].tobytes(), digest_size=16).digest()
    key = bytes((ALGORITHM_REVISION, bool(head_end))) + largest.to_bytes(2, "big") + digest
    return MatchKey(key, before + after, read_end, after)


# Texts longer than this are fingerprinted in a worker thread, so that one large prompt does not hold up
# the event loop's other requests.
OFF_LOOP_CHARS = 1 << 16


async def fingerprint_off_loop(
    text: str, shingle_size: int = DEFAULT_SHINGLE_SIZE, normalize: bool = DEFAULT_NORMALIZE
) -> FingerprintSet:
    """``fingerprint``, in a worker thread for a text above OFF_LOOP_CHARS."""
    if len(text) <= OFF_LOOP_CHARS:
        return fingerprint(text, shingle_size, normalize)
    return await asyncio.to_thread(fingerprint, text, shingle_size, normalize)


async def match_key_off_loop(text: str) -> MatchKey:
    """``match_key``, in a worker thread for a text above OFF_LOOP_CHARS."""
    return match_key(text) if len(text) <= OFF_LOOP_CHARS else await asyncio.to_thread(match_key, text)
