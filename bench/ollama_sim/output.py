"""Deterministic output: how many tokens a request generates, and their text."""
from __future__ import annotations

from typing import Callable

from .tokens import stable_hash

OutputHook = Callable[[str, list[dict]], int]
"""(model name, messages) -> natural output length in tokens (before num_predict/context caps)."""

MIN_OUTPUT, MAX_OUTPUT = 16, 512
WORDS = ("the", "a", "model", "is", "of", "to", "and", "in", "data", "we", "it", "can", "this",
         "for", "on", "with", "that", "as", "be", "by", "not", "more", "so", "use", "one", "all", "will")


def default_output_tokens(seed: int) -> OutputHook:
    """Log-uniform length in [16, 512] from a seeded hash of the model and the last message."""
    def hook(model: str, messages: list[dict]) -> int:
        last = str(messages[-1].get("content") or "") if messages else ""
        u = stable_hash(str(seed), model, last) / 2**64
        return int(MIN_OUTPUT * (MAX_OUTPUT / MIN_OUTPUT) ** u)
    return hook


def output_pieces(seed: int, model: str, messages: list[dict], n: int) -> list[str]:
    """n text pieces, each one token under every tokenizer stand-in (short words, leading space)."""
    last = str(messages[-1].get("content") or "") if messages else ""
    h = stable_hash(str(seed), "text", model, last)
    pieces = []
    for i in range(n):
        h = (h * 6364136223846793005 + 1442695040888963407) % 2**64
        pieces.append(("" if i == 0 else " ") + WORDS[(h >> 33) % len(WORDS)])
    return pieces
