"""Canonical prompt text (DESIGN §4.1) and the request facts the tuner needs."""

from __future__ import annotations

from typing import Any

# Options whose change reloads the model and that this optimizer sets.
TUNED_OPTIONS = ("num_ctx", "num_batch")


def canonical_text(request: dict[str, Any]) -> str:
    """chat: ``"{role}: {content}\\n"`` per message in order; generate: system + prompt; embed: the inputs,
    one per line (a batch is sized as one text, so the context holds even the sum of its inputs)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            if isinstance(message, dict):
                parts.append(f"{message.get('role', '')}: {_text(message.get('content'))}\n")
        return "".join(parts)
    inputs = request.get("input")
    if isinstance(inputs, list):
        return "\n".join(_text(item) for item in inputs)
    if isinstance(inputs, str):
        return inputs
    return _text(request.get("system")) + _text(request.get("prompt"))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def within_cap(text: str, max_bytes: int) -> bool:
    """True when the UTF-8 encoding of ``text`` fits in ``max_bytes`` (cheap for short texts)."""
    if len(text) * 4 <= max_bytes:
        return True
    return len(text) <= max_bytes and len(text.encode("utf-8", "surrogatepass")) <= max_bytes


def message_count(request: dict[str, Any]) -> int:
    messages = request.get("messages")
    return len(messages) if isinstance(messages, list) else 0


def client_options(request: dict[str, Any]) -> dict[str, Any]:
    options = request.get("options")
    return options if isinstance(options, dict) else {}


def num_predict(options: dict[str, Any]) -> int:
    """The client's num_predict as the tuner wants it: 0 when unset or unlimited (negative)."""
    value = options.get("num_predict")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return 0
    return min(int(value), 2**32 - 1)
