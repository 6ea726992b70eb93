"""Deterministic tokenizer stand-in and chat-template token accounting.

The matcher's uncalibrated unit is one regex match of `\\w+|[^\\w\\s]` (DESIGN §4.1). A BPE tokenizer
splits long words and digit runs into several pieces, so real token counts are a model-specific
multiple of those units (see bench/CONSTANTS.md, "Tokenizer stand-in"). Here every punctuation mark is
one token, a digit run costs ceil(len / digits_per_piece) tokens and a word costs
ceil(len / chars_per_piece) tokens. Chat templates add per-message marker tokens.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .profiles import ModelProfile

UNIT_RE = re.compile(r"\w+|[^\w\s]")


def unit_count(text: str) -> int:
    """The matcher's uncalibrated unit count."""
    return sum(1 for _ in UNIT_RE.finditer(text))


def stable_hash(*parts: str) -> int:
    """A process-independent 64-bit hash (Python's hash() is salted per process)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    return int.from_bytes(h.digest(), "little")


def token_count(text: str, model: ModelProfile) -> int:
    """Tokens of text under the model's tokenizer stand-in."""
    total = 0
    for m in UNIT_RE.finditer(text):
        unit = m.group()
        if not (unit[0].isalnum() or unit[0] == "_"):
            total += 1
        elif unit.isdigit():
            total += -(-len(unit) // model.digits_per_piece)
        else:
            total += -(-len(unit) // model.chars_per_piece)
    return total


@dataclass(frozen=True)
class Segment:
    """One rendered chat message: identity (for the prefix cache) and token cost."""

    role: str
    key: int
    tokens: int


def render(messages: list[dict], model: ModelProfile) -> list[Segment]:
    """Render messages through the model's chat template into token segments (no BOS/generation prompt)."""
    segs = []
    if model.default_system and (not messages or messages[0].get("role") != "system"):
        segs.append(
            Segment(
                "system",
                stable_hash("system", model.default_system),
                token_count(model.default_system, model) + model.msg_overhead,
            )
        )
    for msg in messages:
        role = str(msg.get("role", "user"))
        content = str(msg.get("content") or "")
        segs.append(Segment(role, stable_hash(role, content), token_count(content, model) + model.msg_overhead))
    return segs


def prompt_tokens(segments: list[Segment], model: ModelProfile) -> int:
    """Total prompt tokens: template prefix (BOS) + messages + the assistant turn opener."""
    return model.bos_tokens + sum(s.tokens for s in segments) + model.gen_prompt
