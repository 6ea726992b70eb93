"""The OpenAI Responses door: ``/v1/responses`` as Ollama's ``openai/responses.go`` and ``ResponsesMiddleware`` do it.

Stateless, as Ollama serves it: ``instructions`` and ``input`` (a string, or message, function_call,
function_call_output and reasoning items) become a native ``/api/chat`` request (``max_output_tokens`` ->
``num_predict``, temperature, top_p, function tools, a ``text.format`` json_schema -> ``format``,
``reasoning.effort`` -> ``think``). The answer becomes a Response object, or the Responses event
sequence: ``response.created``, ``response.in_progress``, the output items with their deltas and
``response.completed`` (every event numbered; no ``[DONE]``). Images, files and tools other than
functions are not translated: the gateway relays those requests untouched.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from . import compat_wire as wire
from .compat_openai import error_body, tool_calls

_EFFORTS = ("low", "medium", "high", "max")


class _Raw(dict[str, Any]):
    """A JSON value Go keeps as written (``json.RawMessage``): its keys are not sorted."""


def _go_map(value: Any) -> Any:
    """A ``map[string]any`` as Go marshals it: keys sorted, at every level (raw values as written)."""
    if isinstance(value, _Raw):
        return value
    if isinstance(value, dict):
        return {k: _go_map(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_go_map(v) for v in value]
    return value


@dataclass(frozen=True)
class _Echo:
    """What a Response repeats of its request."""

    model: str
    instructions: str
    truncation: str
    tools: list[dict[str, Any]]
    text_format: dict[str, Any] | None
    effort: str
    summary: str
    top_p: float
    temperature: float
    max_output_tokens: int | None
    background: bool

    def response(
        self,
        response_id: str,
        created_at: int,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        reasoning: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The Response object, fields in ``ResponsesResponse`` order."""
        return {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "completed_at": None,
            "status": status,
            "incomplete_details": None,
            "model": self.model,
            "previous_response_id": None,
            "instructions": self.instructions or None,
            "output": output,
            "error": None,
            "tools": self.tools,
            "tool_choice": "auto",
            "truncation": self.truncation,
            "parallel_tool_calls": True,
            "text": {"format": self.text_format if self.text_format is not None else {"type": "text"}},
            "top_p": self.top_p,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "top_logprobs": 0,
            "temperature": self.temperature,
            "reasoning": reasoning,
            "usage": usage,
            "max_output_tokens": self.max_output_tokens,
            "max_tool_calls": None,
            "store": False,
            "background": self.background,
            "service_tier": "default",
            "metadata": {},
            "safety_identifier": None,
            "prompt_cache_key": None,
        }


def _usage(native: dict[str, Any]) -> dict[str, Any]:
    prompt, output = wire.native_count(native, "prompt_eval_count"), wire.native_count(native, "eval_count")
    return {
        "input_tokens": prompt,
        "output_tokens": output,
        "total_tokens": prompt + output,
        "input_tokens_details": {"cached_tokens": wire.native_count(native, "prompt_eval_cached_count")},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_item(item_id: str, thinking: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": thinking}],
        "encrypted_content": thinking,
    }


def _message_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [_text_part(text)],
    }


def _call_item(item_id: str, status: str, call: dict[str, Any], arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call["id"],
        "name": call["function"]["name"],
        "arguments": arguments,
    }


@dataclass
class ResponsesReply(wire.SseReply):
    stream: bool
    echo: _Echo
    id: str = field(default_factory=lambda: f"resp_{random.randrange(999999)}")
    item_id: str = field(default_factory=lambda: f"msg_{random.randrange(999999)}")
    _first: bool = True
    _sequence: int = 0
    _output_index: int = 0
    _text: str = ""
    _text_started: bool = False
    _calls_sent: bool = False
    _call_items: list[dict[str, Any]] = field(default_factory=list)
    _thinking: str = ""
    _reasoning_id: str = ""
    _reasoning_done: bool = False

    no_cache = True  # as ResponsesMiddleware sets it

    def answer(self, native: dict[str, Any]) -> bytes:
        """``ToResponse`` with ``completed_at`` set as the middleware sets it."""
        message = wire.native_message(native)
        output: list[dict[str, Any]] = []
        if wire.text_field(message, "thinking"):
            output.append(_reasoning_item(f"rs_{self.id}", message["thinking"]))
        calls = tool_calls(message)
        for i, call in enumerate(calls):
            item = _call_item(f"fc_{self.id}_{i}", "completed", call, call["function"]["arguments"])
            output.append({k: v for k, v in item.items() if v != ""})  # omitempty
        if not calls:
            output.append(_message_item(self.item_id, "completed", wire.text_field(message, "content")))
        echo = self.echo
        reasoning = {k: v for k, v in (("effort", echo.effort), ("summary", echo.summary)) if v} or None
        response = echo.response(
            self.id, wire.unix_seconds(native.get("created_at")), "completed", output, _usage(native), reasoning
        )
        response["completed_at"] = int(time.time())
        response["tools"] = _go_map(response["tools"])
        return wire.go_encoded(response)

    def chunk(self, native: dict[str, Any]) -> bytes:
        """``ResponsesStreamConverter.Process``: the events one native object produces."""
        events: list[bytes] = []
        message = wire.native_message(native)
        calls = tool_calls(message)
        if self._first:
            self._first = False
            events.append(self._event("response.created", {"response": self._object("in_progress", [], None)}))
            events.append(self._event("response.in_progress", {"response": self._object("in_progress", [], None)}))
        if wire.text_field(message, "thinking"):
            events.extend(self._thinking_delta(message["thinking"]))
        if calls:
            events.extend(self._calls(calls))
            self._calls_sent = True
        elif not self._calls_sent and wire.text_field(message, "content"):
            events.extend(self._text_delta(message["content"]))
        if native.get("done") is True:
            events.extend(self._completion(native))
        return b"".join(events)

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {**data, "type": kind, "sequence_number": self._sequence}
        self._sequence += 1
        return wire.sse_event(kind, _go_map(data))

    def _object(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        """``buildResponseObject``: a reasoning object always has both keys there."""
        echo = self.echo
        reasoning = (
            {"effort": echo.effort or None, "summary": echo.summary or None} if echo.effort or echo.summary else None
        )
        return echo.response(self.id, int(time.time()), status, output, usage, reasoning)

    def _thinking_delta(self, thinking: str) -> list[bytes]:
        events = []
        if not self._reasoning_id:
            self._reasoning_id = f"rs_{random.randrange(999999)}"
            events.append(
                self._event(
                    "response.output_item.added",
                    {
                        "output_index": self._output_index,
                        "item": {"id": self._reasoning_id, "type": "reasoning", "summary": []},
                    },
                )
            )
        self._thinking += thinking
        events.append(
            self._event(
                "response.reasoning_summary_text.delta",
                {
                    "item_id": self._reasoning_id,
                    "output_index": self._output_index,
                    "summary_index": 0,
                    "delta": thinking,
                },
            )
        )
        return events

    def _finish_reasoning(self) -> list[bytes]:
        if not self._reasoning_id or self._reasoning_done:
            return []
        self._reasoning_done = True
        events = [
            self._event(
                "response.reasoning_summary_text.done",
                {
                    "item_id": self._reasoning_id,
                    "output_index": self._output_index,
                    "summary_index": 0,
                    "text": self._thinking,
                },
            ),
            self._event(
                "response.output_item.done",
                {"output_index": self._output_index, "item": _reasoning_item(self._reasoning_id, self._thinking)},
            ),
        ]
        self._output_index += 1
        return events

    def _calls(self, calls: list[dict[str, Any]]) -> list[bytes]:
        events = self._finish_reasoning()
        for i, call in enumerate(calls):
            item_id, index = f"fc_{random.randrange(999999)}_{i}", self._output_index + i
            arguments = call["function"]["arguments"]
            done = _call_item(item_id, "completed", call, arguments)
            self._call_items.append(done)
            events.append(
                self._event(
                    "response.output_item.added",
                    {"output_index": index, "item": _call_item(item_id, "in_progress", call, "")},
                )
            )
            if arguments:
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        {"item_id": item_id, "output_index": index, "delta": arguments},
                    )
                )
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    {"item_id": item_id, "output_index": index, "arguments": arguments},
                )
            )
            events.append(self._event("response.output_item.done", {"output_index": index, "item": done}))
        return events

    def _text_delta(self, content: str) -> list[bytes]:
        events = self._finish_reasoning()
        if not self._text_started:
            self._text_started = True
            events.append(
                self._event(
                    "response.output_item.added",
                    {"output_index": self._output_index, "item": _message_item(self.item_id, "in_progress", None)},
                )
            )
            events.append(
                self._event(
                    "response.content_part.added",
                    {
                        "item_id": self.item_id,
                        "output_index": self._output_index,
                        "content_index": 0,
                        "part": _text_part(""),
                    },
                )
            )
        self._text += content
        events.append(
            self._event(
                "response.output_text.delta",
                {
                    "item_id": self.item_id,
                    "output_index": self._output_index,
                    "content_index": 0,
                    "delta": content,
                    "logprobs": [],
                },
            )
        )
        return events

    def _completion(self, native: dict[str, Any]) -> list[bytes]:
        events = self._finish_reasoning()
        if not self._calls_sent and self._text_started:
            where = {"item_id": self.item_id, "output_index": self._output_index, "content_index": 0}
            events.append(self._event("response.output_text.done", {**where, "text": self._text, "logprobs": []}))
            events.append(self._event("response.content_part.done", {**where, "part": _text_part(self._text)}))
            events.append(
                self._event(
                    "response.output_item.done",
                    {"output_index": self._output_index, "item": _message_item(self.item_id, "completed", self._text)},
                )
            )
        output = [_reasoning_item(self._reasoning_id, self._thinking)] if self._reasoning_id else []
        if self._call_items:
            output.extend(self._call_items)
        elif self._text_started:
            output.append(_message_item(self.item_id, "completed", self._text))
        response = self._object("completed", output, _usage(native))
        response["completed_at"] = int(time.time())
        events.append(self._event("response.completed", {"response": response}))
        return events

    error = staticmethod(error_body)


class _NotTranslated(ValueError):
    """Why a request is left to Ollama."""


class ResponsesDoor:
    """``openai.FromResponsesRequest`` behind ``middleware.ResponsesMiddleware``."""

    error = staticmethod(error_body)

    def translate(self, body: Any) -> wire.Translated | str:
        values = wire.typed_fields(
            body,
            {
                "model": (str,),
                "background": (bool,),
                "include": (list,),
                "instructions": (str,),
                "max_output_tokens": (int,),
                "reasoning": (dict,),
                "temperature": wire.NUMBER,
                "text": (dict,),
                "top_p": wire.NUMBER,
                "truncation": (str,),
                "tools": (list,),
                "stream": (bool,),
            },
        )
        if isinstance(values, str):
            return values
        try:
            return _translate(body, values)
        except _NotTranslated as exc:
            return str(exc)


def _translate(body: dict[str, Any], values: dict[str, Any]) -> wire.Translated:
    if not all(isinstance(i, str) for i in values["include"] or []):
        raise _NotTranslated("include has a type Ollama refuses")
    reasoning = _strings(values["reasoning"] or {}, ("effort", "generate_summary", "summary"))
    effort = reasoning["effort"]
    if effort and effort != "none" and effort not in _EFFORTS:
        raise _NotTranslated("invalid reasoning value")
    text_format = _text_format(values["text"])
    native_tools, echoed_tools = _tools(values["tools"] or [])
    messages = [{"role": "system", "content": values["instructions"]}] if values["instructions"] else []
    messages.extend(_input(body.get("input")))
    if not messages:
        raise _NotTranslated("no input")
    options: dict[str, Any] = {"temperature": values["temperature"] if values["temperature"] is not None else 1.0}
    if values["top_p"] is not None:
        options["top_p"] = values["top_p"]
    if values["max_output_tokens"] is not None:
        options["num_predict"] = values["max_output_tokens"]
    stream = bool(values["stream"])
    native: dict[str, Any] = {
        "model": values["model"] or "",
        "messages": messages,
        "options": options,
        "stream": stream,
    }
    if native_tools:
        native["tools"] = native_tools
    if text_format is not None and text_format["type"] == "json_schema" and "schema" in text_format:
        native["format"] = text_format["schema"]
    if effort:
        native["think"] = False if effort == "none" else effort
    echo = _Echo(
        values["model"] or "",
        values["instructions"] or "",
        values["truncation"] if values["truncation"] is not None else "disabled",
        echoed_tools,
        text_format,
        effort,
        reasoning["summary"],
        values["top_p"] if values["top_p"] is not None else 1.0,
        options["temperature"],
        values["max_output_tokens"],
        bool(values["background"]),
    )
    return wire.Translated("chat", native, ResponsesReply(stream, echo))


def _strings(obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """String fields as Go decodes them (absent or null: empty)."""
    out = {}
    for key in keys:
        ok, value = wire.optional(obj, key, (str,))
        if not ok:
            raise _NotTranslated(f"{key} has a type Ollama refuses")
        out[key] = value or ""
    return out


def _text_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """``text.format`` as ``ResponsesTextFormat`` echoes it (empty fields omitted, the schema as written)."""
    fmt = (text or {}).get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _NotTranslated("text.format has a type Ollama refuses")
    fields = _strings(fmt, ("type", "name"))
    ok, strict = wire.optional(fmt, "strict", (bool,))
    if not ok:
        raise _NotTranslated("text.format.strict has a type Ollama refuses")
    out: dict[str, Any] = {"type": fields["type"]}
    if fields["name"]:
        out["name"] = fields["name"]
    schema = fmt.get("schema")
    if schema is not None:
        out["schema"] = _Raw(schema) if isinstance(schema, dict) else schema
    if strict is not None:
        out["strict"] = strict
    return out


def _tools(tools: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Function tools as native tools, and as the Response echoes them (``ResponsesTool``)."""
    native, echoed = [], []
    for tool in tools:
        if not isinstance(tool, dict):
            raise _NotTranslated("tools has a type Ollama refuses")
        fields = _strings(tool, ("type", "name", "description"))
        ok_strict, strict = wire.optional(tool, "strict", (bool,))
        ok_params, parameters = wire.optional(tool, "parameters", (dict,))
        if not ok_strict or not ok_params:
            raise _NotTranslated("tools has a type Ollama refuses")
        if fields["type"] != "function":
            raise _NotTranslated("only function tools are translated")
        function: dict[str, Any] = {"name": fields["name"]}
        if fields["description"]:
            function["description"] = fields["description"]
        function["parameters"] = parameters or {}
        native.append({"type": "function", "function": function})
        echoed.append(
            {
                "type": "function",
                "name": fields["name"],
                "description": tool.get("description"),
                "strict": strict,
                "parameters": parameters,
            }
        )
    return native, echoed


def _input(value: Any) -> list[dict[str, Any]]:
    """``ResponsesInput`` as native messages (a reasoning item's text goes to the next assistant message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value else []
    if not isinstance(value, list):
        raise _NotTranslated("input must be a string or array")
    messages: list[dict[str, Any]] = []
    thinking = ""
    for item in value:
        if not isinstance(item, dict):
            raise _NotTranslated("input item is not an object")
        fields = _strings(item, ("type", "role", "call_id", "name", "arguments", "encrypted_content"))
        kind = fields["type"] or ("message" if fields["role"] else "")
        if kind == "reasoning":
            thinking = fields["encrypted_content"]
        elif kind == "message":
            message = {"role": fields["role"], "content": _content(item.get("content"))}
            if fields["role"] == "assistant" and thinking:
                message["thinking"], thinking = thinking, ""
            messages.append(message)
        elif kind == "function_call":
            if not (messages and messages[-1]["role"] == "assistant"):
                messages.append({"role": "assistant", "content": ""})
            messages[-1].setdefault("tool_calls", []).append(_function_call(fields))
            if thinking:
                messages[-1]["thinking"], thinking = thinking, ""
        elif kind == "function_call_output":
            result = {"role": "tool", "content": _content(item.get("output"))}
            if fields["call_id"]:
                result["tool_call_id"] = fields["call_id"]
            messages.append(result)
        else:
            raise _NotTranslated(f"unknown input item type: {kind!r}")
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    return messages


def _function_call(fields: dict[str, str]) -> dict[str, Any]:
    arguments: Any = {}
    if fields["arguments"]:
        try:
            arguments = json.loads(fields["arguments"])
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise _NotTranslated("failed to parse function call arguments")
    call: dict[str, Any] = {"id": fields["call_id"]} if fields["call_id"] else {}
    return {**call, "function": {"name": fields["name"], "arguments": arguments}}


def _content(content: Any) -> str:
    """The text of a message's content or a call's output (a string or content items)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _NotTranslated("content must be a string or array")
    text = ""
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("text") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(value, (str, type(None))):
            text += value or ""
        elif kind != "input_image" or part.get("image_url"):
            raise _NotTranslated("only text content is translated")  # an image given by file id is skipped
    return text
