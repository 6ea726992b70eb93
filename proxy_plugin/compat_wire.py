"""What the compatible front doors share: Go-style JSON, SSE framing, NDJSON line splitting, the door contract.

Ollama's compatibility layer (``middleware/``) decodes an OpenAI or Anthropic request into a native
``/api/chat``, ``/api/generate`` or ``/api/embed`` request, runs the native handler, and rewrites every
object the handler writes into the compatible format. A *door* here does the same two halves: ``translate``
builds the native request (or says why it cannot be translated faithfully) and the returned ``Reply``
rewrites the native answer, object by object.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

NATIVE_PATHS = {"chat": "/api/chat", "generate": "/api/generate", "embed": "/api/embed"}
JSON_TYPE = "application/json"
NUMBER = (int, float)  # what Go decodes into a float64
SSE_TYPE = "text/event-stream"

_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class Reply(Protocol):
    """Rewrites one native answer into the compatible format (stateful for streams)."""

    stream: bool

    def content_type(self) -> str: ...

    def stream_headers(self) -> dict[str, str]:
        """The headers of a streamed answer (Content-Type and what the API's middleware adds)."""

    def answer(self, native: dict[str, Any]) -> bytes:
        """The whole compatible body for a non-streamed native answer."""

    def chunk(self, native: dict[str, Any]) -> bytes:
        """The SSE bytes for one native stream object (the final one adds the closing events)."""

    def error(self, message: str) -> bytes:
        """The compatible error body for a native error message."""


class SseReply:
    """The framing half of a ``Reply`` whose streams are Server-Sent Events."""

    stream: bool
    no_cache = False  # the API's middleware adds ``Cache-Control: no-cache`` to a stream

    def content_type(self) -> str:
        return SSE_TYPE if self.stream else JSON_TYPE

    def stream_headers(self) -> dict[str, str]:
        """Content-Type, and no-cache where the API's middleware sets it (Connection is hop-by-hop)."""
        headers = {"Content-Type": SSE_TYPE}
        if self.no_cache:
            headers["Cache-Control"] = "no-cache"
        return headers


@dataclass(frozen=True)
class Translated:
    """A compatible request as the native request Ollama's own compatibility layer would run."""

    endpoint: str  # "chat", "generate" or "embed"
    native: dict[str, Any]
    reply: Reply

    @property
    def path(self) -> str:
        return NATIVE_PATHS[self.endpoint]


class Door(Protocol):
    def translate(self, body: Any) -> Translated | str:
        """The native request, or why it cannot be translated faithfully (then it is relayed untouched)."""

    def error(self, message: str, status: int) -> bytes:
        """An error body in the door's API format, typed by HTTP status as the API does."""


def go_value(value: Any) -> Any:
    """Floats as Go's encoding/json prints them: integral values without a fraction."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: go_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [go_value(v) for v in value]
    return value


def go_json(value: Any) -> str:
    """``json.Marshal``: compact, UTF-8, with Go's HTML escapes."""
    text = json.dumps(go_value(value), ensure_ascii=False, separators=(",", ":"))
    for char, escape in _HTML_ESCAPES.items():
        if char in text:
            text = text.replace(char, escape)
    return text


def go_encoded(value: Any) -> bytes:
    """``json.NewEncoder(w).Encode``: ``go_json`` plus a newline."""
    return (go_json(value) + "\n").encode()


def sse_data(value: Any) -> bytes:
    return f"data: {go_json(value)}\n\n".encode()


def sse_event(event: str, value: Any) -> bytes:
    return f"event: {event}\ndata: {go_json(value)}\n\n".encode()


def error_message(body: bytes) -> str:
    """The message of a native ``{"error": ...}`` body (``api.StatusError.Error()``)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    message = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(message, str) and message:
        return message
    return "something went wrong, please see the ollama server logs for details"


class NdjsonLines:
    """Splits a byte stream into complete NDJSON objects; keeps only the unfinished line."""

    def __init__(self) -> None:
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._partial += chunk
        *lines, rest = bytes(self._partial).split(b"\n")
        self._partial = bytearray(rest)
        return [obj for obj in map(_object, lines) if obj is not None]

    def close(self) -> list[dict[str, Any]]:
        rest, self._partial = bytes(self._partial), bytearray()
        obj = _object(rest)
        return [] if obj is None else [obj]


def _object(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def optional(body: dict[str, Any], key: str, kinds: tuple[type, ...]) -> tuple[bool, Any]:
    """(ok, value) for an optional field Go decodes into ``kinds``; null is absent; bool is never a number."""
    value = body.get(key)
    if value is None:
        return True, None
    if isinstance(value, bool) and bool not in kinds:
        return False, None
    if int in kinds and float not in kinds and isinstance(value, float):
        return False, None  # Go cannot decode a number written with a fraction into an int
    return isinstance(value, kinds), value


def unix_seconds(created_at: Any) -> int:
    """``CreatedAt.Unix()`` of a native answer's RFC 3339 ``created_at`` (now when absent)."""
    if isinstance(created_at, str):
        try:
            return int(datetime.fromisoformat(created_at).timestamp())
        except ValueError:
            pass
    return int(time.time())


def typed_fields(body: Any, kinds_by_key: dict[str, tuple[type, ...]]) -> dict[str, Any] | str:
    """The request's optional fields when each has the type Go decodes it into, else why not."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    values = {}
    for key, kinds in kinds_by_key.items():
        ok, values[key] = optional(body, key, kinds)
        if not ok:
            return f"{key} has a type Ollama refuses"
    return values


@dataclass(frozen=True)
class NativeCall:
    """One tool call of a native answer's message."""

    id: str
    index: int
    name: str
    arguments: Any


def native_message(native: dict[str, Any]) -> dict[str, Any]:
    message = native.get("message")
    return message if isinstance(message, dict) else {}


def native_calls(message: dict[str, Any]) -> list[NativeCall]:
    calls = message.get("tool_calls")
    out = []
    for item in calls if isinstance(calls, list) else []:
        call: dict[str, Any] = item if isinstance(item, dict) else {}
        function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        arguments, index = function.get("arguments"), function.get("index")
        out.append(
            NativeCall(
                _string(call.get("id")),
                index if type(index) is int else 0,
                _string(function.get("name")),
                arguments if arguments is not None else {},
            )
        )
    return out


def text_field(message: dict[str, Any], key: str) -> str:
    """A string field of a native message (Go's zero value when it is not one)."""
    return _string(message.get(key))


def native_count(native: dict[str, Any], key: str) -> int:
    """A token count of a native answer (0 when absent, as Go's zero value)."""
    value = native.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _string(value: Any) -> str:
    """A string field of a native answer (Go's zero value when it is not one)."""
    return value if isinstance(value, str) else ""
