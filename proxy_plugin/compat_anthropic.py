"""The Anthropic-compatible door: ``/v1/messages`` as Ollama's ``anthropic/`` and ``middleware/anthropic.go`` do it.

The request becomes a native ``/api/chat`` request (``max_tokens`` -> ``num_predict``, temperature, top_p,
top_k, stop sequences, tools, thinking); the answer becomes a Messages response or the Messages event
sequence (``message_start``, content blocks, ``message_delta`` with the stop reason, ``message_stop``).
Requests Ollama would refuse and image blocks are not translated: the gateway relays them untouched.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from . import compat_wire as wire

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(message: str, status: int = 0) -> bytes:
    """``anthropic.NewError``; a native error reaches it without a status code (``api_error``)."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return wire.go_encoded(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{secrets.token_hex(12)}"}
    )


def stop_reason(done_reason: Any, has_tool_calls: bool) -> str:
    """``mapStopReason``."""
    if has_tool_calls:
        return "tool_use"
    if done_reason == "stop":
        return "end_turn"
    if done_reason == "length":
        return "max_tokens"
    return "stop_sequence" if isinstance(done_reason, str) and done_reason else ""


def _usage(native: dict[str, Any], input_tokens: int, output_tokens: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if "prompt_eval_cached_count" in native:  # Ollama versions that report the cached prefix
        usage["cache_read_input_tokens"] = wire.native_count(native, "prompt_eval_cached_count")
    return usage


@dataclass
class MessagesReply(wire.SseReply):
    stream: bool
    model: str
    id: str = field(default_factory=lambda: f"msg_{secrets.token_hex(12)}")
    _first: bool = True
    _index: int = 0
    _thinking_started: bool = False
    _thinking_done: bool = False
    _text_started: bool = False
    _calls_sent: set[str] = field(default_factory=set)

    no_cache = True  # as AnthropicMessagesMiddleware sets it

    def answer(self, native: dict[str, Any]) -> bytes:
        """``ToMessagesResponse``."""
        message = wire.native_message(native)
        content: list[dict[str, Any]] = []
        if wire.text_field(message, "thinking"):
            content.append({"type": "thinking", "thinking": message["thinking"]})
        if wire.text_field(message, "content"):
            content.append({"type": "text", "text": message["content"]})
        calls = wire.native_calls(message)
        content.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in calls)
        response: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": native.get("model") or "",
            "content": content or None,
        }
        reason = stop_reason(native.get("done_reason"), bool(calls))
        if reason:
            response["stop_reason"] = reason
        response["usage"] = _usage(
            native, wire.native_count(native, "prompt_eval_count"), wire.native_count(native, "eval_count")
        )
        return wire.go_encoded(response)

    def chunk(self, native: dict[str, Any]) -> bytes:
        """``StreamConverter.Process``: the events one native object produces."""
        events: list[bytes] = []
        message = wire.native_message(native)
        if self._first:
            self._first = False
            start = {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "usage": {"input_tokens": wire.native_count(native, "prompt_eval_count"), "output_tokens": 0},
            }
            events.append(wire.sse_event("message_start", {"type": "message_start", "message": start}))
        thinking, text = wire.text_field(message, "thinking"), wire.text_field(message, "content")
        if thinking and not self._thinking_done:
            if not self._thinking_started:
                self._thinking_started = True
                events.append(self._block_start({"type": "thinking", "thinking": ""}))
            events.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
        if text:
            if self._thinking_started and not self._thinking_done:
                self._thinking_done = True
                events.append(self._block_stop())
                self._index += 1
            if not self._text_started:
                self._text_started = True
                events.append(self._block_start({"type": "text", "text": ""}))
            events.append(self._delta({"type": "text_delta", "text": text}))
        for call in wire.native_calls(message):
            if call.id in self._calls_sent:
                continue
            if self._text_started:
                events.append(self._block_stop())
                self._index += 1
                self._text_started = False
            events.append(self._block_start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}))
            events.append(self._delta({"type": "input_json_delta", "partial_json": wire.go_json(call.arguments)}))
            events.append(self._block_stop())
            self._calls_sent.add(call.id)
            self._index += 1
        if native.get("done") is True:
            if self._text_started or (self._thinking_started and not self._thinking_done):
                events.append(self._block_stop())
            reason = stop_reason(native.get("done_reason"), bool(self._calls_sent))
            events.append(
                wire.sse_event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason} if reason else {},
                        "usage": {"output_tokens": wire.native_count(native, "eval_count")},
                    },
                )
            )
            events.append(wire.sse_event("message_stop", {"type": "message_stop"}))
        return b"".join(events)

    def _block_start(self, block: dict[str, Any]) -> bytes:
        return wire.sse_event(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return wire.sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
        )

    def _block_stop(self) -> bytes:
        return wire.sse_event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    error = staticmethod(error_body)


class MessagesDoor:
    """``anthropic.FromMessagesRequest`` behind ``middleware.AnthropicMessagesMiddleware``."""

    error = staticmethod(error_body)

    def translate(self, body: Any) -> wire.Translated | str:
        values = wire.typed_fields(
            body,
            {
                "model": (str,),
                "max_tokens": (int,),
                "messages": (list,),
                "stream": (bool,),
                "temperature": wire.NUMBER,
                "top_p": wire.NUMBER,
                "top_k": (int,),
                "stop_sequences": (list,),
                "tools": (list,),
                "tool_choice": (dict,),
                "thinking": (dict,),
                "metadata": (dict,),
            },
        )
        if isinstance(values, str):
            return values
        if not values["model"] or not values["max_tokens"] or values["max_tokens"] <= 0 or not values["messages"]:
            return "model, a positive max_tokens and messages are required"
        stops = values["stop_sequences"] or []
        if not all(isinstance(s, str) for s in stops):
            return "stop_sequences has a type Ollama refuses"
        messages = _system(body.get("system"))
        for param in values["messages"]:
            converted = _convert_message(param)
            if isinstance(converted, str):
                return converted
            messages.extend(converted)
        tools = _tools(values["tools"] or [])
        if isinstance(tools, str):
            return tools
        options: dict[str, Any] = {"num_predict": values["max_tokens"]}
        for key in ("temperature", "top_p", "top_k"):
            if values[key] is not None:
                options[key] = values[key]
        if stops:
            options["stop"] = stops
        stream = bool(values["stream"])
        native: dict[str, Any] = {"model": values["model"], "messages": messages, "options": options, "stream": stream}
        if tools:
            native["tools"] = tools
        thinking = values["thinking"]
        if thinking is not None and thinking.get("type") == "enabled":
            native["think"] = True
        return wire.Translated("chat", native, MessagesReply(stream, values["model"]))


def _system(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if isinstance(system, list):
        text = "".join(
            b["text"]
            for b in system
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
        return [{"role": "system", "content": text}] if text else []
    return []


def _convert_message(param: Any) -> list[dict[str, Any]] | str:
    """``convertMessage``: text, tool_use, tool_result and thinking blocks (images are not translated)."""
    if not isinstance(param, dict) or not wire.optional(param, "role", (str,))[0]:
        return "a message has a type Ollama refuses"
    role, content = (param.get("role") or "").lower(), param.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        return "invalid message content type"
    text, thinking, calls, results = "", "", [], []
    for block in content:
        if not isinstance(block, dict):
            return "invalid content block format"
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text += block["text"]
        elif kind == "image":
            return "image blocks are not translated"
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                return "tool_use block missing required field"
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            calls.append({"id": block["id"], "function": {"name": block["name"], "arguments": arguments}})
        elif kind == "tool_result":
            results.append(_tool_result(block))
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking = block["thinking"]
    out: list[dict[str, Any]] = []
    if text or calls or thinking:
        message: dict[str, Any] = {"role": role, "content": text}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out + results


def _tool_result(block: dict[str, Any]) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        content = "".join(
            c["text"]
            for c in content
            if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
        )
    result: dict[str, Any] = {"role": "tool", "content": content if isinstance(content, str) else ""}
    if isinstance(block.get("tool_use_id"), str) and block["tool_use_id"]:
        result["tool_call_id"] = block["tool_use_id"]
    return result


def _tools(tools: list[Any]) -> list[dict[str, Any]] | str:
    """``convertTool``: Anthropic tool definitions as native function tools."""
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or not all(wire.optional(tool, k, (str,))[0] for k in ("name", "description")):
            return "tools has a type Ollama refuses"
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            return f"invalid input_schema for tool {tool.get('name')!r}"
        function: dict[str, Any] = {"name": tool.get("name") or ""}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = schema or {}
        out.append({"type": "function", "function": function})
    return out
