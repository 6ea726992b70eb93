"""Find Ollama's final response object in a relayed body without holding a stream in memory."""

from __future__ import annotations

import json
from typing import Any


class FinalObject:
    """Fed the body chunk by chunk; keeps only the current partial line and the last complete one.

    NDJSON streams end with the ``"done": true`` chunk; a non-streamed body is one JSON object
    (kept whole, it is small).
    """

    def __init__(self, require_done: bool = True) -> None:
        self._partial = bytearray()
        self._last = b""
        self._require_done = require_done

    def feed(self, chunk: bytes) -> None:
        newline = chunk.rfind(b"\n")
        if newline < 0:
            self._partial += chunk
            return
        self._partial += chunk[:newline]
        line = _last_nonempty_line(self._partial)
        if line:
            self._last = line
        self._partial = bytearray(chunk[newline + 1 :])

    def result(self) -> dict[str, Any] | None:
        """The parsed final object when it says ``done: true`` (or, without ``require_done``, any object, as
        /api/embed answers); otherwise None."""
        candidate = bytes(self._partial).strip() or self._last
        try:
            parsed = json.loads(candidate)
        except ValueError:
            return None
        if not isinstance(parsed, dict) or (self._require_done and parsed.get("done") is not True):
            return None
        return parsed


def _last_nonempty_line(data: bytearray) -> bytes:
    for line in reversed(bytes(data).split(b"\n")):
        if line.strip():
            return line.strip()
    return b""
