"""The ``/opt`` slash command: detect it at the start of the last message (a user's) or prompt, and strip it."""

from __future__ import annotations

from typing import Any

COMMAND = "/opt"


def _strip(text: str) -> str | None:
    stripped = text.lstrip()
    if stripped == COMMAND or stripped.startswith((COMMAND + " ", COMMAND + "\n")):
        return stripped[len(COMMAND) :].lstrip()
    return None


def strip_command(request: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``request`` without the command, or None when the request does not carry it."""
    messages = request.get("messages")
    if isinstance(messages, list):  # as the host does: only when the last message is the user's
        last = messages[-1] if messages else None
        if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), str):
            return None
        rest = _strip(last["content"])
        if rest is None:
            return None
        return {**request, "messages": [*messages[:-1], {**last, "content": rest}]}
    prompt = request.get("prompt")
    rest = _strip(prompt) if isinstance(prompt, str) else None
    return None if rest is None else {**request, "prompt": rest}
