"""Deterministic output: how many tokens a request generates, and their text."""

from __future__ import annotations

from collections.abc import Callable

from .tokens import stable_hash

OutputHook = Callable[[str, list[dict]], int]
"""(model name, messages) -> natural output length in tokens (before num_predict/context caps)."""

MIN_OUTPUT, MAX_OUTPUT = 16, 512
WORDS = (
    "the",
    "a",
    "model",
    "is",
    "of",
    "to",
    "and",
    "in",
    "data",
    "we",
    "it",
    "can",
    "this",
    "for",
    "on",
    "with",
    "that",
    "as",
    "be",
    "by",
    "not",
    "more",
    "so",
    "use",
    "one",
    "all",
    "will",
)


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


def tool_calls(tools: object, messages: list[dict], pieces: list[str]) -> list[dict]:
    """A tool-calling model's answer when tools are offered and the user spoke last: one call of the first
    tool with its required arguments (strings from the answer's words), as Ollama's native API returns it."""
    if not isinstance(tools, list) or not tools or not messages or messages[-1].get("role") != "user":
        return []
    function = tools[0].get("function") if isinstance(tools[0], dict) else None
    if not isinstance(function, dict):
        return []
    parameters = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    properties = parameters.get("properties") if isinstance(parameters.get("properties"), dict) else {}
    required = parameters.get("required") if isinstance(parameters.get("required"), list) else []
    word = pieces[0].strip() if pieces else "x"
    by_type = {"string": word, "integer": 1, "number": 1.5, "boolean": True}
    arguments = {
        name: by_type.get((properties.get(name) or {}).get("type"), word) for name in required if isinstance(name, str)
    }
    call_id = f"call_{stable_hash(str(function.get('name')), word) % 16**8:08x}"
    return [{"id": call_id, "function": {"index": 0, "name": str(function.get("name") or ""), "arguments": arguments}}]
