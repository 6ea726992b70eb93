"""The compatible doors' translation, object by object, against what Ollama's compatibility layer writes."""

from __future__ import annotations

import base64
import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_plugin.compat_anthropic import MessagesDoor, MessagesReply
from proxy_plugin.compat_openai import (
    ChatDoor,
    ChatReply,
    CompletionDoor,
    CompletionReply,
    EmbeddingDoor,
)
from proxy_plugin.compat_responses import ResponsesDoor
from proxy_plugin.compat_wire import NdjsonLines, Translated, go_json

MODEL = "qwen3:8b"
CALL = {"id": "call_abc", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris", "days": 2.0}}}
TOOL_CALL = {"model": MODEL, "message": {"role": "assistant", "content": "", "tool_calls": [CALL]}, "done": False}
DONE = {
    "model": MODEL,
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 7,
    "eval_count": 3,
}
"""Native stream chunks: a tool call, and the final chunk with its counts."""


def _native(door, body: dict) -> dict:
    translated = door.translate(body)
    assert isinstance(translated, Translated), translated
    return translated.native


def _sse(raw: bytes) -> list[tuple[str | None, object]]:
    events = []
    for block in filter(None, raw.decode().split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        data = fields["data"] if fields["data"] == "[DONE]" else json.loads(fields["data"])
        events.append((fields.get("event"), data))
    return events


def test_go_json_escapes_html_and_prints_integral_floats_as_go_does() -> None:
    assert go_json({"a": "<b>&</b>", "n": 2.0, "x": 1.5, "u": "é\u2028"}) == (
        '{"a":"\\u003cb\\u003e\\u0026\\u003c/b\\u003e","n":2,"x":1.5,"u":"é\\u2028"}'
    )


def test_ndjson_lines_survive_any_chunking() -> None:
    body = b'{"a":1}\n{"b":2}\n{"done":true}'
    for cut in range(1, len(body)):
        lines = NdjsonLines()
        got = lines.feed(body[:cut]) + lines.feed(body[cut:]) + lines.close()
        assert got == [{"a": 1}, {"b": 2}, {"done": True}]


def test_chat_request_mapping() -> None:
    native = _native(
        ChatDoor(),
        {
            "model": MODEL,
            "stream": True,
            "reasoning_effort": "none",
            "stop": "END",
            "frequency_penalty": 0.5,
            "response_format": {"type": "JSON_OBJECT"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
        },
    )
    assert native == {
        "model": MODEL,
        "format": "json",
        "stream": True,
        "think": False,
        "options": {"stop": ["END"], "temperature": 1.0, "frequency_penalty": 0.5, "top_p": 1.0},
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": {"x": 1}}}],
            },
            {"role": "tool", "content": "42", "tool_name": "f", "tool_call_id": "call_1"},
        ],
    }


def test_requests_ollama_refuses_or_that_are_not_translated_are_left_to_ollama() -> None:
    door, msg = ChatDoor(), [{"role": "user", "content": "x"}]
    for body in (
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": msg, "max_tokens": 1.5},
        {"model": MODEL, "messages": msg, "reasoning_effort": "max"},
        {"model": MODEL, "messages": msg, "logprobs": True},
        {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
            ],
        },
        {
            "model": MODEL,
            "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "not json"}}]}],
        },
        [1, 2],
    ):
        assert isinstance(door.translate(body), str)
    assert isinstance(CompletionDoor().translate({"model": MODEL, "prompt": "p", "stop": ["a", 1]}), str)
    assert isinstance(MessagesDoor().translate({"model": MODEL, "max_tokens": 0, "messages": msg}), str)
    assert isinstance(EmbeddingDoor().translate({"model": MODEL, "input": []}), str)


def test_chat_stream_with_a_tool_call_ends_in_tool_calls_with_usage_and_done() -> None:
    reply = ChatReply(stream=True, include_usage=True)
    raw = reply.chunk(
        {"model": MODEL, "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False}
    )
    raw += reply.chunk(TOOL_CALL) + reply.chunk(DONE)
    events = [data for _, data in _sse(raw)]
    assert events[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": "", "reasoning": "hmm"},
        "finish_reason": None,
    }
    call = events[1]["choices"][0]["delta"]["tool_calls"][0]
    assert call == {
        "id": "call_abc",
        "index": 0,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":2}'},
    }
    assert events[2]["choices"][0]["finish_reason"] == "tool_calls"  # a call was sent earlier in the stream
    assert events[3]["choices"] == [] and events[3]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }
    assert events[4] == "[DONE]" and all("usage" not in e for e in events[:3])


def test_chat_answer_fields_and_cached_tokens() -> None:
    answer = json.loads(
        ChatReply(stream=False, include_usage=False).answer(
            {
                "model": MODEL,
                "created_at": "2026-12-05T10:00:00.123456789Z",
                "done": True,
                "done_reason": "length",
                "message": {"role": "assistant", "content": "hi"},
                "prompt_eval_count": 9,
                "eval_count": 2,
                "prompt_eval_cached_count": 4,
            }
        )
    )
    assert answer["object"] == "chat.completion" and answer["created"] == 1796464800
    assert answer["system_fingerprint"] == "fp_ollama" and answer["id"].startswith("chatcmpl-")
    assert answer["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"}
    ]
    assert answer["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_completion_stream_usage_as_ollama_sends_it() -> None:
    reply = CompletionReply(stream=True, include_usage=True)
    events = [
        d
        for _, d in _sse(
            reply.chunk({"model": MODEL, "response": "a", "done": False})
            + reply.chunk(
                {
                    "model": MODEL,
                    "response": "",
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": 5,
                    "eval_count": 1,
                }
            )
        )
    ]
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert [e["usage"] for e in events[:3]] == [
        zero,
        zero,
        {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    ]
    assert list(events[0]) == ["id", "object", "created", "choices", "model", "system_fingerprint", "usage"]
    assert events[3] == "[DONE]"
    native = _native(CompletionDoor(), {"model": MODEL, "prompt": "p", "max_tokens": 3, "seed": 1})
    assert native["options"] == {
        "num_predict": 3,
        "temperature": 1.0,
        "seed": 1,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "top_p": 1.0,
    }


def test_embedding_list_in_float_and_base64() -> None:
    native = {"model": "nomic-embed-text", "embeddings": [[0.5, -1.0]], "prompt_eval_count": 3}
    translated = EmbeddingDoor().translate({"model": "nomic-embed-text", "input": "", "encoding_format": "base64"})
    assert isinstance(translated, Translated) and translated.native["input"] == [""]
    answer = json.loads(translated.reply.answer(native))
    assert struct.unpack("<2f", base64.b64decode(answer["data"][0]["embedding"])) == (0.5, -1.0)
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3} and answer["object"] == "list"


def test_messages_request_mapping() -> None:
    native = _native(
        MessagesDoor(),
        {
            "model": MODEL,
            "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief."}],
            "thinking": {"type": "enabled", "budget_tokens": 100},
            "top_k": 5,
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "ok"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]}
                    ],
                },
            ],
        },
    )
    assert native == {
        "model": MODEL,
        "options": {"num_predict": 64, "top_k": 5},
        "stream": False,
        "think": True,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [{"id": "t1", "function": {"name": "f", "arguments": {"a": 1}}}],
            },
            {"role": "tool", "content": "42", "tool_call_id": "t1"},
        ],
    }


def test_messages_stream_event_sequence_thinking_text_tool() -> None:
    reply = MessagesReply(stream=True, model=MODEL)
    raw = reply.chunk({"model": MODEL, "message": {"role": "assistant", "thinking": "hm"}, "done": False})
    raw += reply.chunk({"model": MODEL, "message": {"role": "assistant", "content": "Hi"}, "done": False})
    raw += reply.chunk(TOOL_CALL) + reply.chunk(DONE)
    events = _sse(raw)
    assert [(e, d.get("index")) for e, d in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}  # Ollama: from the 1st chunk
    assert events[7][1]["content_block"] == {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {}}
    assert events[8][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":"Paris","days":2}'}
    assert events[10][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use"},
        "usage": {"output_tokens": 3},
    }


def test_messages_answer_and_errors() -> None:
    reply = MessagesReply(stream=False, model=MODEL)
    empty = json.loads(
        reply.answer(
            {
                "model": MODEL,
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "length",
                "eval_count": 4,
            }
        )
    )
    assert empty["content"] is None and empty["stop_reason"] == "max_tokens"  # Go's nil slice
    assert empty["usage"] == {"input_tokens": 0, "output_tokens": 4}
    cached = json.loads(
        reply.answer(
            {"model": MODEL, "done": True, "prompt_eval_count": 9, "eval_count": 1, "prompt_eval_cached_count": 6}
        )
    )
    assert cached["usage"] == {"input_tokens": 9, "output_tokens": 1, "cache_read_input_tokens": 6}
    error = json.loads(reply.error("model 'x' not found"))
    assert error["type"] == "error" and error["error"] == {"type": "api_error", "message": "model 'x' not found"}
    assert error["request_id"].startswith("req_")
    assert json.loads(MessagesDoor.error("bad", 400))["error"]["type"] == "invalid_request_error"
    assert json.loads(ChatDoor.error("bad", 400)) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }


def test_responses_request_mapping() -> None:
    schema = {"type": "object", "properties": {"b": {}, "a": {}}}
    translated = ResponsesDoor().translate(
        {
            "model": MODEL,
            "instructions": "Be brief.",
            "max_output_tokens": 9,
            "top_p": 0.5,
            "stream": True,
            "reasoning": {"effort": "none"},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": schema}},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "input": [
                {"role": "user", "content": "q"},
                {"type": "reasoning", "summary": [], "encrypted_content": "hm"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_text", "text": "4"}, {"type": "input_text", "text": "2"}],
                },
            ],
        }
    )
    assert isinstance(translated, Translated)
    assert translated.native == {
        "model": MODEL,
        "options": {"temperature": 1.0, "top_p": 0.5, "num_predict": 9},
        "stream": True,
        "think": False,
        "format": schema,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "ok",
                "thinking": "hm",
                "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}],
            },
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ],
    }
    door, ask = ResponsesDoor(), {"model": MODEL, "input": "x"}
    for body in (
        {**ask, "tools": [{"type": "web_search"}]},
        {**ask, "reasoning": {"effort": "huge"}},
        {**ask, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
        {**ask, "input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]},
        {**ask, "input": [{"type": "function_call", "name": "f", "arguments": "[1]"}]},
        {**ask, "input": [{"content": "no type, no role"}]},
        {**ask, "input": ""},
        {**ask, "background": 1},
    ):
        assert isinstance(door.translate(body), str), body


def test_responses_stream_event_sequence_thinking_text_and_tool_call() -> None:
    translated = ResponsesDoor().translate({"model": MODEL, "input": "x", "stream": True})
    assert isinstance(translated, Translated)
    reply = translated.reply
    raw = reply.chunk({"model": MODEL, "message": {"role": "assistant", "thinking": "hm"}, "done": False})
    raw += reply.chunk({"model": MODEL, "message": {"role": "assistant", "content": "Hi"}, "done": False})
    raw += reply.chunk(DONE | {"prompt_eval_cached_count": 5})
    events = _sse(raw)
    assert [(e, d["type"] == e, d["sequence_number"], d.get("output_index")) for e, d in events] == [
        ("response.created", True, 0, None),
        ("response.in_progress", True, 1, None),
        ("response.output_item.added", True, 2, 0),
        ("response.reasoning_summary_text.delta", True, 3, 0),
        ("response.reasoning_summary_text.done", True, 4, 0),
        ("response.output_item.done", True, 5, 0),
        ("response.output_item.added", True, 6, 1),
        ("response.content_part.added", True, 7, 1),
        ("response.output_text.delta", True, 8, 1),
        ("response.output_text.done", True, 9, 1),
        ("response.content_part.done", True, 10, 1),
        ("response.output_item.done", True, 11, 1),
        ("response.completed", True, 12, None),
    ]
    assert list(events[0][1]) == sorted(events[0][1])  # Go marshals maps with sorted keys
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed" and completed["completed_at"] >= completed["created_at"]
    assert [o["type"] for o in completed["output"]] == ["reasoning", "message"]
    assert completed["output"][1]["content"][0]["text"] == "Hi"
    assert completed["usage"] == {
        "input_tokens": 7,
        "output_tokens": 3,
        "total_tokens": 10,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens_details": {"reasoning_tokens": 0},
    }

    tools = ResponsesDoor().translate(
        {
            "model": MODEL,
            "input": "x",
            "stream": True,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        }
    )
    assert isinstance(tools, Translated)
    raw = tools.reply.chunk({"model": MODEL, "message": {"role": "assistant", "tool_calls": [CALL]}, "done": False})
    raw += tools.reply.chunk({"model": MODEL, "message": {"role": "assistant", "content": "late"}, "done": True})
    events = _sse(raw)
    assert [e for e, _ in events][2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]  # text after a tool call is dropped, as Ollama does
    assert events[2][1]["item"]["arguments"] == "" and events[3][1]["delta"] == '{"city":"Paris","days":2}'
    call = events[-1][1]["response"]["output"]
    assert call == [
        {
            "id": events[2][1]["item"]["id"],
            "type": "function_call",
            "status": "completed",
            "call_id": "call_abc",
            "name": "get_weather",
            "arguments": '{"city":"Paris","days":2}',
        }
    ]
    assert events[-1][1]["response"]["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": None,
            "strict": None,
            "parameters": {"type": "object"},
        }
    ]


def test_responses_answer_fields() -> None:
    translated = ResponsesDoor().translate(
        {
            "model": MODEL,
            "input": "x",
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "schema": {"b": 1, "a": 2}}},
        }
    )
    assert isinstance(translated, Translated)
    answer = json.loads(
        translated.reply.answer(
            {
                "model": MODEL,
                "created_at": "2026-12-05T10:00:00Z",
                "done": True,
                "done_reason": "length",
                "message": {"role": "assistant", "content": "", "thinking": "hm", "tool_calls": [CALL]},
                "prompt_eval_count": 9,
                "eval_count": 2,
            }
        )
    )
    rid = answer["id"]
    assert rid.startswith("resp_") and answer["created_at"] == 1796464800 and answer["status"] == "completed"
    assert answer["output"] == [
        {
            "id": f"rs_{rid}",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "hm"}],
            "encrypted_content": "hm",
        },
        {
            "id": f"fc_{rid}_0",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_abc",
            "name": "get_weather",
            "arguments": '{"city":"Paris","days":2}',
        },
    ]
    assert answer["reasoning"] == {"effort": "low"} and answer["text"] == {
        "format": {"type": "json_schema", "schema": {"b": 1, "a": 2}}
    }
    assert list(answer["text"]["format"]["schema"]) == ["b", "a"]  # a raw schema keeps its order
    assert answer["usage"]["total_tokens"] == 11 and answer["temperature"] == 1 and answer["truncation"] == "disabled"
    assert json.loads(translated.reply.error("model 'x' not found"))["error"]["type"] == "api_error"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
_FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "seed",
    "stop",
    "temperature",
    "top_p",
    "response_format",
    "tools",
    "reasoning",
    "reasoning_effort",
    "prompt",
    "suffix",
    "input",
    "dimensions",
    "encoding_format",
    "system",
    "stop_sequences",
    "thinking",
    "top_k",
    "tool_choice",
    "instructions",
    "max_output_tokens",
    "text",
    "truncation",
    "include",
    "background",
]
_call = st.fixed_dictionaries(
    {
        "id": _json,
        "function": st.fixed_dictionaries(
            {"name": _json, "arguments": st.sampled_from(['{"a": 1}', "[]", "x", ""]) | _json, "index": _json}
        )
        | _json,
    }
)
_message = st.fixed_dictionaries(
    {
        "role": _json | st.sampled_from(["user", "assistant", "tool"]),
        "content": _json
        | st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["text", "image_url", "tool_use", "tool_result", "thinking"]),
                    "text": _json,
                    "input": _json,
                    "id": _json,
                    "name": _json,
                    "content": _json,
                }
            )
        ),
        "tool_calls": st.lists(_call, max_size=2) | _json,
        "tool_call_id": _json,
        "name": _json,
    }
)
_item = st.fixed_dictionaries(
    {
        "type": _json | st.sampled_from(["message", "function_call", "function_call_output", "reasoning"]),
        "role": _json | st.sampled_from(["user", "assistant"]),
        "content": _json,
        "call_id": _json,
        "name": _json,
        "arguments": _json | st.sampled_from(['{"a": 1}', "[]", ""]),
        "output": _json,
        "encrypted_content": _json,
    }
)
_body = st.one_of(
    _json,
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=8),
    st.fixed_dictionaries(
        {"model": st.just(MODEL), "max_tokens": st.integers(-2, 5), "messages": st.lists(_message | _json, max_size=4)},
        optional={"tools": _json},
    ),
    st.fixed_dictionaries(
        {"model": st.just(MODEL), "input": st.lists(_item | _json, max_size=4) | _json},
        optional={"tools": _json, "text": _json, "reasoning": _json},
    ),
)
_DOORS = (ChatDoor(), CompletionDoor(), EmbeddingDoor(), MessagesDoor(), ResponsesDoor())


@settings(max_examples=300, deadline=None)
@given(_body)
def test_any_body_is_translated_or_left_to_ollama_never_raises(body: object) -> None:
    for door in _DOORS:
        translated = door.translate(body)
        assert isinstance(translated, (Translated, str))
        if isinstance(translated, Translated):
            json.loads(go_json(translated.native))  # what the gateway sends is JSON


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "model",
                "message",
                "response",
                "done",
                "done_reason",
                "created_at",
                "prompt_eval_count",
                "eval_count",
                "embeddings",
            ]
        ),
        _json
        | st.fixed_dictionaries(
            {"role": _json, "content": _json, "thinking": _json, "tool_calls": st.lists(_call, max_size=2) | _json}
        ),
        max_size=6,
    )
)
def test_any_native_object_becomes_a_compatible_answer(native: dict) -> None:
    embeddings = EmbeddingDoor().translate({"model": MODEL, "input": "x", "encoding_format": "base64"})
    responses = [ResponsesDoor().translate({"model": MODEL, "input": "x", "stream": s}) for s in (True, False)]
    assert isinstance(embeddings, Translated) and all(isinstance(r, Translated) for r in responses)
    for reply in (
        ChatReply(stream=True, include_usage=True),
        ChatReply(stream=False, include_usage=False),
        CompletionReply(stream=True, include_usage=True),
        MessagesReply(stream=True, model=MODEL),
        MessagesReply(stream=False, model=MODEL),
        embeddings.reply,
        *(r.reply for r in responses),
    ):
        assert isinstance(reply.chunk(native) if reply.stream else reply.answer(native), bytes)
