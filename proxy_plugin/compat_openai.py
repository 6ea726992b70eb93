"""OpenAI-compatible doors: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Field for field what Ollama's ``openai/openai.go`` and ``middleware/openai.go`` do: the request becomes a
native request whose ``options`` hold only what the OpenAI fields map to (so a client cannot set
``num_ctx``), and every native object becomes a chat completion, a chunk, a text completion or an
embedding list. Requests Ollama would refuse, or that use what is not translated here (images,
logprobs, debug rendering), are not translated: the gateway relays them to Ollama untouched.
"""

from __future__ import annotations

import base64
import json
import math
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from . import compat_wire as wire

_EFFORTS = ("high", "medium", "low", "none")
_DONE = b"data: [DONE]\n\n"
_FLOAT32_MAX = 3.4028234663852886e38


def error_body(message: str, status: int = 500) -> bytes:
    """``openai.NewError``; the compatibility layer wraps every native error as a 500 (``api_error``)."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return wire.go_encoded({"error": {"message": message, "type": kind, "param": None, "code": None}})


def _usage(native: dict[str, Any]) -> dict[str, Any]:
    prompt = wire.native_count(native, "prompt_eval_count")
    completion = wire.native_count(native, "eval_count")
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if "prompt_eval_cached_count" in native:  # Ollama versions that report the cached prefix
        usage["prompt_tokens_details"] = {"cached_tokens": wire.native_count(native, "prompt_eval_cached_count")}
    return usage


def _events(chunk: dict[str, Any], native: dict[str, Any], include_usage: bool) -> bytes:
    """The SSE bytes of one chunk; after the final one the usage chunk (when asked for) and ``[DONE]``."""
    out = wire.sse_data(chunk)
    if native.get("done") is True:
        if include_usage:
            out += wire.sse_data({**chunk, "choices": [], "usage": _usage(native)})
        out += _DONE
    return out


def _reason(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """``openai.ToToolCalls``."""
    return [
        {
            "id": c.id,
            "index": c.index,
            "type": "function",
            "function": {"name": c.name, "arguments": wire.go_json(c.arguments)},
        }
        for c in wire.native_calls(message)
    ]


def _message(native: dict[str, Any], role: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    message = wire.native_message(native)
    calls = tool_calls(message)
    out: dict[str, Any] = {
        "role": role if role is not None else message.get("role") or "",
        "content": message.get("content") or "",
    }
    if message.get("thinking"):
        out["reasoning"] = message["thinking"]
    if calls:
        out["tool_calls"] = calls
    return out, calls


# --- /v1/chat/completions ----------------------------------------------------------------------------


@dataclass
class ChatReply(wire.SseReply):
    stream: bool
    include_usage: bool
    id: str = field(default_factory=lambda: f"chatcmpl-{random.randrange(999)}")
    _tool_call_sent: bool = False

    def answer(self, native: dict[str, Any]) -> bytes:
        message, calls = _message(native, None)
        reason = "tool_calls" if calls else _reason(native.get("done_reason"))
        return wire.go_encoded(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": wire.unix_seconds(native.get("created_at")),
                "model": native.get("model") or "",
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": _usage(native),
            }
        )

    def chunk(self, native: dict[str, Any]) -> bytes:
        delta, calls = _message(native, "assistant")
        reason = _reason(native.get("done_reason"))
        if reason is not None and (self._tool_call_sent or calls):
            reason = "tool_calls"
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": native.get("model") or "",
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }
        self._tool_call_sent = self._tool_call_sent or bool(calls)
        return _events(chunk, native, self.include_usage)

    error = staticmethod(error_body)


class ChatDoor:
    """``openai.FromChatRequest`` behind ``middleware.ChatMiddleware``."""

    error = staticmethod(error_body)

    def translate(self, body: Any) -> wire.Translated | str:
        values = wire.typed_fields(
            body,
            {
                "model": (str,),
                "stream": (bool,),
                "stream_options": (dict,),
                "max_tokens": (int,),
                "seed": (int,),
                "temperature": wire.NUMBER,
                "frequency_penalty": wire.NUMBER,
                "presence_penalty": wire.NUMBER,
                "top_p": wire.NUMBER,
                "response_format": (dict,),
                "tools": (list,),
                "reasoning": (dict,),
                "reasoning_effort": (str,),
                "messages": (list,),
            },
        )
        if isinstance(values, str):
            return values
        if body.get("logprobs") or body.get("top_logprobs") or body.get("_debug_render_only"):
            return "logprobs and debug rendering are not translated"
        if not values["messages"]:
            return "no messages"
        messages = _chat_messages(values["messages"])
        if isinstance(messages, str):
            return messages
        think = _think(values["reasoning"], values["reasoning_effort"])
        if think == "invalid":
            return "invalid reasoning effort"
        fmt = _format(values["response_format"])
        if fmt == "invalid":
            return "response_format has a type Ollama refuses"
        tools = values["tools"]
        if tools is not None and not all(isinstance(t, dict) for t in tools):
            return "tools has a type Ollama refuses"
        native: dict[str, Any] = {"model": values["model"] or "", "messages": messages}
        if fmt is not None:
            native["format"] = fmt
        native["options"] = _chat_options(body, values)
        stream = bool(values["stream"])
        native["stream"] = stream
        if tools:
            native["tools"] = tools
        if think is not None:
            native["think"] = think
        options = values["stream_options"] or {}
        ok, include_usage = wire.optional(options, "include_usage", (bool,))
        if not ok:
            return "stream_options.include_usage has a type Ollama refuses"
        return wire.Translated("chat", native, ChatReply(stream, stream and bool(include_usage)))


def _chat_options(body: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = [s for s in stop if isinstance(s, str)]
    if values["max_tokens"] is not None:
        options["num_predict"] = values["max_tokens"]
    options["temperature"] = values["temperature"] if values["temperature"] is not None else 1.0
    if values["seed"] is not None:
        options["seed"] = values["seed"]
    for key in ("frequency_penalty", "presence_penalty"):
        if values[key] is not None:
            options[key] = values[key]
    options["top_p"] = values["top_p"] if values["top_p"] is not None else 1.0
    return options


def _format(response_format: dict[str, Any] | None) -> Any:
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind is not None and not isinstance(kind, str):
        return "invalid"
    kind = (kind or "").strip().lower()
    if kind == "json_object":
        return "json"
    schema_holder = response_format.get("json_schema")
    if kind == "json_schema" and isinstance(schema_holder, dict):
        return schema_holder.get("schema")
    return None


def _think(reasoning: dict[str, Any] | None, effort_field: str | None) -> Any:
    effort = reasoning.get("effort") if reasoning is not None else effort_field
    if effort is None or effort == "":
        return None
    if not isinstance(effort, str) or effort not in _EFFORTS:
        return "invalid"
    return False if effort == "none" else effort


def _chat_messages(messages: list[Any]) -> list[dict[str, Any]] | str:
    out: list[dict[str, Any]] = []
    for msg in messages:
        if not isinstance(msg, dict):
            return "a message is not an object"
        for key in ("role", "reasoning", "name", "tool_call_id"):
            if not wire.optional(msg, key, (str,))[0]:
                return f"message {key} has a type Ollama refuses"
        calls = _native_tool_calls(msg.get("tool_calls"))
        if isinstance(calls, str):
            return calls
        role, content = msg.get("role") or "", msg.get("content")
        tool_name = ""
        if role.lower() == "tool":
            tool_name = msg.get("name") or (
                _name_of_call(messages, msg["tool_call_id"]) if msg.get("tool_call_id") else ""
            )
        extra: dict[str, Any] = {
            "thinking": msg.get("reasoning") or "",
            "tool_calls": calls,
            "tool_name": tool_name,
            "tool_call_id": msg.get("tool_call_id") or "",
        }
        if isinstance(content, str):
            out.append(_native_message(role, content, **extra))
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    return "only text content parts are translated"
                out.append(_native_message(role, part["text"]))
            if out and calls:  # on the last message so far, as Ollama does
                last = out[-1]
                out[-1] = _native_message(last["role"], last["content"], images=last.get("images"), **extra)
        elif msg.get("tool_calls") is not None:
            out.append(_native_message(role, "", **{**extra, "tool_name": ""}))
        else:
            return "invalid message content type"
    return out


def _native_message(
    role: str,
    content: str,
    *,
    thinking: str = "",
    images: list[str] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    tool_name: str = "",
    tool_call_id: str = "",
) -> dict[str, Any]:
    """An ``api.Message`` as Go encodes it (empty optional fields omitted)."""
    message: dict[str, Any] = {"role": role, "content": content}
    for key, value in (
        ("thinking", thinking),
        ("images", images),
        ("tool_calls", tool_calls),
        ("tool_name", tool_name),
        ("tool_call_id", tool_call_id),
    ):
        if value:
            message[key] = value
    return message


def _native_tool_calls(calls: Any) -> list[dict[str, Any]] | str:
    """``openai.FromCompletionToolCall``: arguments must be a JSON object."""
    if calls is None:
        return []
    if not isinstance(calls, list):
        return "tool_calls has a type Ollama refuses"
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("arguments", ""), str):
            return "tool_calls has a type Ollama refuses"
        try:
            arguments = json.loads(function.get("arguments") or "")
        except ValueError:
            return "invalid tool call arguments"
        if not isinstance(arguments, dict):
            return "invalid tool call arguments"
        native: dict[str, Any] = {"id": call["id"]} if isinstance(call.get("id"), str) and call["id"] else {}
        out.append({**native, "function": {"name": function.get("name") or "", "arguments": arguments}})
    return out


def _name_of_call(messages: list[Any], call_id: str) -> str:
    """``nameFromToolCallID``: the last tool call with that id wins."""
    for msg in reversed(messages):
        calls = msg.get("tool_calls") if isinstance(msg, dict) else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and call.get("id") == call_id and isinstance(call.get("function"), dict):
                return call["function"].get("name") or ""
    return ""


# --- /v1/completions ---------------------------------------------------------------------------------


@dataclass
class CompletionReply(wire.SseReply):
    stream: bool
    include_usage: bool
    id: str = field(default_factory=lambda: f"cmpl-{random.randrange(999)}")

    def _choice(self, native: dict[str, Any]) -> dict[str, Any]:
        text = native.get("response")
        return {
            "text": text if isinstance(text, str) else "",
            "index": 0,
            "finish_reason": _reason(native.get("done_reason")),
        }

    def answer(self, native: dict[str, Any]) -> bytes:
        return wire.go_encoded(
            {
                "id": self.id,
                "object": "text_completion",
                "created": wire.unix_seconds(native.get("created_at")),
                "model": native.get("model") or "",
                "system_fingerprint": "fp_ollama",
                "choices": [self._choice(native)],
                "usage": _usage(native),
            }
        )

    def chunk(self, native: dict[str, Any]) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": int(time.time()),
            "choices": [self._choice(native)],
            "model": native.get("model") or "",
            "system_fingerprint": "fp_ollama",
        }
        if self.include_usage:  # Ollama attaches a zero usage to every chunk when asked for usage
            chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return _events(chunk, native, self.include_usage)

    error = staticmethod(error_body)


class CompletionDoor:
    """``openai.FromCompleteRequest`` behind ``middleware.CompletionsMiddleware``."""

    error = staticmethod(error_body)

    def translate(self, body: Any) -> wire.Translated | str:
        values = wire.typed_fields(
            body,
            {
                "model": (str,),
                "prompt": (str,),
                "frequency_penalty": wire.NUMBER,
                "max_tokens": (int,),
                "presence_penalty": wire.NUMBER,
                "seed": (int,),
                "stream": (bool,),
                "stream_options": (dict,),
                "temperature": wire.NUMBER,
                "top_p": wire.NUMBER,
                "suffix": (str,),
            },
        )
        if isinstance(values, str):
            return values
        if body.get("logprobs") or body.get("_debug_render_only"):
            return "logprobs and debug rendering are not translated"
        options: dict[str, Any] = {}
        stop = body.get("stop")
        if isinstance(stop, str):
            options["stop"] = [stop]
        elif isinstance(stop, list):
            if not all(isinstance(s, str) for s in stop):
                return "invalid type for 'stop' field"
            options["stop"] = stop
        if values["max_tokens"] is not None:
            options["num_predict"] = values["max_tokens"]
        options["temperature"] = values["temperature"] if values["temperature"] is not None else 1.0
        if values["seed"] is not None:
            options["seed"] = values["seed"]
        options["frequency_penalty"] = values["frequency_penalty"] or 0.0
        options["presence_penalty"] = values["presence_penalty"] or 0.0
        options["top_p"] = values["top_p"] or 1.0
        stream = bool(values["stream"])
        native: dict[str, Any] = {"model": values["model"] or "", "prompt": values["prompt"] or ""}
        if values["suffix"]:
            native["suffix"] = values["suffix"]
        native.update({"stream": stream, "options": options})
        ok, include_usage = wire.optional(values["stream_options"] or {}, "include_usage", (bool,))
        if not ok:
            return "stream_options.include_usage has a type Ollama refuses"
        return wire.Translated("generate", native, CompletionReply(stream, stream and bool(include_usage)))


# --- /v1/embeddings ----------------------------------------------------------------------------------


@dataclass
class EmbeddingReply:
    model: str
    encoding_format: str
    stream: bool = False

    def content_type(self) -> str:
        return wire.JSON_TYPE

    def stream_headers(self) -> dict[str, str]:
        return {"Content-Type": wire.JSON_TYPE}

    def answer(self, native: dict[str, Any]) -> bytes:
        embeddings = native.get("embeddings")
        if not isinstance(embeddings, list):
            return wire.go_encoded(
                {"object": "", "data": None, "model": "", "usage": {"prompt_tokens": 0, "total_tokens": 0}}
            )
        as_base64 = self.encoding_format.lower() == "base64"
        data = [
            {"object": "embedding", "embedding": _base64_floats(e) if as_base64 else e, "index": i}
            for i, e in enumerate(embeddings)
        ]
        count = wire.native_count(native, "prompt_eval_count")
        return wire.go_encoded(
            {
                "object": "list",
                "data": data,
                "model": self.model,
                "usage": {"prompt_tokens": count, "total_tokens": count},
            }
        )

    def chunk(self, native: dict[str, Any]) -> bytes:
        return self.answer(native)

    error = staticmethod(error_body)


def _base64_floats(values: Any) -> str:
    """``floatsToBase64``: little-endian float32 (what is not a number is Go's zero value)."""
    floats = [_float32(v) for v in values] if isinstance(values, list) else []
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode()


def _float32(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if abs(value) <= _FLOAT32_MAX else math.copysign(math.inf, value)


class EmbeddingDoor:
    """``middleware.EmbeddingsMiddleware``: ``/v1/embeddings`` as ``/api/embed``."""

    error = staticmethod(error_body)

    def translate(self, body: Any) -> wire.Translated | str:
        values = wire.typed_fields(body, {"model": (str,), "dimensions": (int,), "encoding_format": (str,)})
        if isinstance(values, str):
            return values
        encoding = values["encoding_format"] or ""
        if encoding and encoding.lower() not in ("float", "base64"):
            return "unsupported encoding_format"
        inputs = body.get("input")
        if inputs == "":
            inputs = [""]
        if inputs is None or inputs == [] or not isinstance(inputs, (str, list)):
            return "invalid input"
        native: dict[str, Any] = {"model": values["model"] or "", "input": inputs}
        if values["dimensions"]:
            native["dimensions"] = values["dimensions"]
        return wire.Translated("embed", native, EmbeddingReply(values["model"] or "", encoding))
