"""The compatible APIs through the gateway, driven by the official ``openai`` and ``anthropic`` clients.

Every request goes once through the gateway and once straight to the emulator (which serves the
compatible endpoints as Ollama does: options ignored, default context); the answers must agree field
by field except ids and timestamps, while the emulator's records show the context each one ran with.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy_plugin.loop_guard import HOP_HEADER

from plugin_fixtures import StandInTuner, gateway_chain, sample, stand_ins

MODEL = "smollm2:135m"
DEFAULT_CTX = 8192  # the emulator's default context for this model (its training context)
TUNED = {"num_ctx": 2048, "num_batch": 128}
MESSAGES = [{"role": "system", "content": "You answer tersely."}, {"role": "user", "content": "Summarise: a b c."}]
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    }
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": OPENAI_TOOLS[0]["function"]["parameters"],
    }
]
ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": OPENAI_TOOLS[0]["function"]["parameters"],
    }
]
_VOLATILE = {"id", "created", "request_id", "created_at", "completed_at", "item_id"}


def _same(value: Any) -> Any:
    """The answer without what differs between two identical requests (ids, timestamps)."""
    if isinstance(value, dict):
        return {k: _same(v) for k, v in value.items() if k not in _VOLATILE or isinstance(v, (dict, list))}
    if isinstance(value, list):
        return [_same(v) for v in value]
    return value


async def _sse(url: str, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """The raw SSE events of a streamed answer: (event name, parsed data or the literal [DONE])."""
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert ("Cache-Control" in response.headers) == url.endswith(("/v1/messages", "/v1/responses"))  # as Ollama
        text = await response.text()
    events = []
    for block in filter(None, text.split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        data = fields["data"]
        events.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return events


@pytest.fixture
async def chain():
    async with stand_ins(tuner=StandInTuner(**TUNED)) as services, gateway_chain(services.config()) as parts:
        gw, tap, emu = parts
        yield services, gw, tap, emu


def _clients(gw, emu) -> tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]:
    return (
        openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0),
        openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0),
    )


def _sent(tap, path: str = "/api/chat") -> dict[str, Any]:
    """The last native request the gateway sent to ``path``."""
    return json.loads(next(body for p, body in reversed(tap.bodies) if p == path))


def _ran_with(emu, count: int) -> list[int]:
    return [r.runner["num_ctx"] for r in emu.requests[-count:]]


async def test_openai_chat_is_optimized_and_answers_as_ollama(chain) -> None:
    services, gw, tap, emu = chain
    via, direct = _clients(gw, emu)
    request = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, "seed": 7, "stop": ["zzz"], "temperature": 0.2}
    ours = await via.chat.completions.create(**request)
    theirs = await direct.chat.completions.create(**request)
    assert _same(ours.model_dump()) == _same(theirs.model_dump())
    assert ours.choices[0].finish_reason == "length" and ours.usage.completion_tokens == 4
    assert ours.usage.prompt_tokens == emu.requests[-2].prompt_eval_count
    assert _ran_with(emu, 2) == [TUNED["num_ctx"], DEFAULT_CTX]

    native = _sent(tap)
    assert native["stream"] is False and native["messages"] == MESSAGES
    assert native["options"] == {"stop": ["zzz"], "num_predict": 4, "temperature": 0.2, "seed": 7, "top_p": 1, **TUNED}

    await gw.gateway.flush()
    outcome = services.tuner.outcomes[-1]
    assert outcome.counts_known and outcome.num_ctx == TUNED["num_ctx"] and outcome.eval_count == 4
    assert outcome.done_reason == "length" and outcome.num_predict == 4


async def test_openai_chat_stream_sends_the_same_events_with_usage_and_done(chain) -> None:
    services, gw, _tap, emu = chain
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    ours = await _sse(gw.url + "/v1/chat/completions", body)
    theirs = await _sse(emu.url + "/v1/chat/completions", body)
    assert [(e, _same(d)) for e, d in ours] == [(e, _same(d)) for e, d in theirs]
    assert ours[-1] == (None, "[DONE]")
    usage_chunk, last_choice = ours[-2][1], ours[-3][1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == emu.requests[-2].eval_count
    assert last_choice["choices"][0]["finish_reason"] == "stop"
    assert _ran_with(emu, 2) == [TUNED["num_ctx"], DEFAULT_CTX]

    via, _ = _clients(gw, emu)
    chunks = [c async for c in await via.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)]
    assert all(c.usage is None for c in chunks)  # no usage chunk unless asked for
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(
        d["choices"][0]["delta"]["content"] for _, d in ours[:-2]
    )
    await gw.gateway.flush()
    assert [o.counts_known for o in services.tuner.outcomes] == [True, True]
    assert services.tuner.outcomes[-1].eval_count == emu.requests[-1].eval_count


async def test_openai_tools_round_trip_streamed_and_not(chain) -> None:
    _services, gw, tap, emu = chain
    via, direct = _clients(gw, emu)
    ask = [{"role": "user", "content": "Weather in Paris for 2 days?"}]
    ours = await via.chat.completions.create(model=MODEL, messages=ask, tools=OPENAI_TOOLS)
    theirs = await direct.chat.completions.create(model=MODEL, messages=ask, tools=OPENAI_TOOLS)
    assert _same(ours.model_dump()) == _same(theirs.model_dump())
    call = ours.choices[0].message.tool_calls[0]
    assert ours.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city", "days"} and call.id.startswith("call_")
    assert _sent(tap)["tools"] == OPENAI_TOOLS

    stream_body = {"model": MODEL, "messages": ask, "tools": OPENAI_TOOLS, "stream": True}
    streamed = await _sse(gw.url + "/v1/chat/completions", stream_body)
    assert [_same(d) for _, d in streamed] == [
        _same(d) for _, d in await _sse(emu.url + "/v1/chat/completions", stream_body)
    ]
    assert streamed[0][1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert streamed[-2][1]["choices"][0]["finish_reason"] == "tool_calls"

    answered = [
        *ask,
        ours.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    follow = await via.chat.completions.create(model=MODEL, messages=answered, tools=OPENAI_TOOLS)
    assert follow.choices[0].finish_reason == "stop" and follow.choices[0].message.content
    native = _sent(tap)["messages"]
    assert native[1]["tool_calls"] == [
        {"id": call.id, "function": {"name": "get_weather", "arguments": json.loads(call.function.arguments)}}
    ]
    assert native[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": call.id}
    assert _ran_with(emu, 1) == [TUNED["num_ctx"]]


async def test_openai_json_mode_and_structured_outputs_reach_ollama_as_format(chain) -> None:
    _services, gw, tap, _emu = chain
    via, _ = _clients(gw, _emu)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    await via.chat.completions.create(model=MODEL, messages=MESSAGES, response_format={"type": "json_object"})
    assert _sent(tap)["format"] == "json"
    await via.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert _sent(tap)["format"] == schema
    answer = await via.responses.create(
        model=MODEL,
        input="Summarise: a b c.",
        text={"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}},
    )
    assert _sent(tap)["format"] == schema
    assert answer.text.format.model_dump(by_alias=True, exclude_none=True) == {
        "type": "json_schema",
        "name": "a",
        "schema": schema,
        "strict": True,
    }


async def test_openai_completions_streamed_and_not(chain) -> None:
    _services, gw, tap, emu = chain
    via, direct = _clients(gw, emu)
    request = {"model": MODEL, "prompt": "Why is the sky blue?", "max_tokens": 3}
    ours, theirs = await via.completions.create(**request), await direct.completions.create(**request)
    assert _same(ours.model_dump()) == _same(theirs.model_dump()) and ours.choices[0].finish_reason == "length"
    assert _sent(tap, "/api/generate")["prompt"] == request["prompt"]
    body = {**request, "stream": True, "stream_options": {"include_usage": True}}
    streamed = await _sse(gw.url + "/v1/completions", body)
    assert [_same(d) for _, d in streamed] == [_same(d) for _, d in await _sse(emu.url + "/v1/completions", body)]
    assert streamed[0][1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert streamed[-2][1]["usage"]["completion_tokens"] == 3 and streamed[-1][1] == "[DONE]"
    assert _ran_with(emu, 4) == [TUNED["num_ctx"], DEFAULT_CTX] * 2


async def test_openai_responses_streamed_and_not_with_tools(chain) -> None:
    services, gw, tap, emu = chain
    via, direct = _clients(gw, emu)
    request = {
        "model": MODEL,
        "instructions": "You answer tersely.",
        "input": "Summarise: a b c.",
        "max_output_tokens": 4,
        "temperature": 0.2,
    }
    ignored = {"options": {"num_ctx": 4096}, "num_ctx": 4096}  # no field for them: Ollama ignores both
    ours, theirs = (
        await via.responses.create(**request, extra_body=ignored),
        await direct.responses.create(**request, extra_body=ignored),
    )
    assert _same(ours.model_dump()) == _same(theirs.model_dump())
    assert ours.status == "completed" and ours.output_text and ours.usage.output_tokens == 4
    assert ours.usage.input_tokens == emu.requests[-2].prompt_eval_count
    assert _ran_with(emu, 2) == [TUNED["num_ctx"], DEFAULT_CTX]
    native = _sent(tap)
    assert native["messages"] == MESSAGES and native["stream"] is False
    assert native["options"] == {"temperature": 0.2, "num_predict": 4, **TUNED}

    body = {**request, "stream": True}
    events = await _sse(gw.url + "/v1/responses", body)
    assert [(e, _same(d)) for e, d in events] == [(e, _same(d)) for e, d in await _sse(emu.url + "/v1/responses", body)]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert [e for e, _ in events[:4]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert events[-1][0] == "response.completed" and events[-1][1]["response"]["usage"]["output_tokens"] == 4
    assert "".join(d["delta"] for e, d in events if e == "response.output_text.delta") == ours.output_text

    ask = {"model": MODEL, "input": "Weather in Paris for 2 days?", "tools": RESPONSES_TOOLS}
    ours, theirs = await via.responses.create(**ask), await direct.responses.create(**ask)
    assert _same(ours.model_dump()) == _same(theirs.model_dump())
    call = ours.output[0]
    assert (
        call.type == "function_call"
        and call.name == "get_weather"
        and set(json.loads(call.arguments)) == {"city", "days"}
    )
    assert _sent(tap)["tools"] == OPENAI_TOOLS
    async with via.responses.stream(**ask) as stream:
        final = await stream.get_final_response()
    assert [(o.type, o.name, o.arguments) for o in final.output] == [("function_call", call.name, call.arguments)]
    follow = await via.responses.create(
        **{
            **ask,
            "input": [
                {"role": "user", "content": ask["input"]},
                call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
        }
    )
    assert follow.output[0].type == "message" and follow.output_text
    assert _sent(tap)["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": call.call_id, "function": {"name": "get_weather", "arguments": json.loads(call.arguments)}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": call.call_id},
    ]
    assert _ran_with(emu, 1) == [TUNED["num_ctx"]]
    await gw.gateway.flush()
    assert len(services.tuner.outcomes) == 5 and all(o.counts_known for o in services.tuner.outcomes)


async def test_anthropic_messages_streamed_and_not_with_tools(chain) -> None:
    services, gw, tap, emu = chain
    via = anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0)
    direct = anthropic.AsyncAnthropic(base_url=emu.url, api_key="unused", max_retries=0)
    request = {
        "model": MODEL,
        "max_tokens": 5,
        "system": "You answer tersely.",
        "messages": [{"role": "user", "content": "Summarise: a b c."}],
        "stop_sequences": ["zzz"],
    }
    ours, theirs = await via.messages.create(**request), await direct.messages.create(**request)
    assert _same(ours.model_dump()) == _same(theirs.model_dump())
    assert ours.stop_reason == "max_tokens" and ours.usage.output_tokens == 5
    native = _sent(tap)
    assert native["messages"] == MESSAGES and native["options"] == {"num_predict": 5, "stop": ["zzz"], **TUNED}

    tool_request = {**request, "max_tokens": 200, "tools": ANTHROPIC_TOOLS, "stream": True}
    events = await _sse(gw.url + "/v1/messages", tool_request)
    assert [(e, _same(d)) for e, d in events] == [
        (e, _same(d)) for e, d in await _sse(emu.url + "/v1/messages", tool_request)
    ]
    assert [e for e, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[4][1]["delta"] == {"stop_reason": "tool_use"}

    tool_request.pop("stream")
    async with via.messages.stream(**tool_request) as stream:
        final = await stream.get_final_message()
    use = final.content[0]
    assert final.stop_reason == "tool_use" and use.name == "get_weather" and set(use.input) == {"city", "days"}
    follow = await via.messages.create(
        **{
            **request,
            "max_tokens": 200,
            "tools": ANTHROPIC_TOOLS,
            "messages": [
                *request["messages"],
                {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
            ],
        }
    )
    assert follow.stop_reason == "end_turn" and follow.content[0].text
    assert _ran_with(emu, 1) == [TUNED["num_ctx"]]
    await gw.gateway.flush()
    assert len(services.tuner.outcomes) == 4 and all(o.counts_known for o in services.tuner.outcomes)


async def test_errors_in_each_api_format(chain) -> None:
    _services, gw, _tap, emu = chain
    via, direct = _clients(gw, emu)
    for client in (via, direct):
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="missing:1b", messages=MESSAGES)
        assert caught.value.body == {
            "message": "model 'missing:1b' not found",
            "type": "api_error",
            "param": None,
            "code": None,
        }
        with pytest.raises(openai.NotFoundError) as caught:
            await client.responses.create(model="missing:1b", input="x", stream=True)
        assert caught.value.body == {
            "message": "model 'missing:1b' not found",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    for url in (gw.url, emu.url):
        client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as raised:
            await client.messages.create(model="missing:1b", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert _same(raised.value.body) == {
            "type": "error",
            "error": {"type": "api_error", "message": "model 'missing:1b' not found"},
        }


async def test_untranslated_requests_and_model_lists_are_relayed_untouched(chain) -> None:
    _services, gw, tap, _emu = chain
    before = sample("optimizer_gateway_compat_untranslated_total", endpoint="v1_chat_completions")
    image = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
        ],
    }
    raw = json.dumps(image).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            gw.url + "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400  # the emulator refuses what it does not serve; Ollama would answer
        assert ("/v1/chat/completions", raw) in tap.bodies
        image_input = json.dumps(
            {
                "model": MODEL,
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}
                ],
            }
        ).encode()
        async with session.post(
            gw.url + "/v1/responses", data=image_input, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400
        assert ("/v1/responses", image_input) in tap.bodies
        async with session.get(gw.url + "/v1/models") as response:
            assert (await response.json())["data"][0]["object"] == "model"
    assert sample("optimizer_gateway_compat_untranslated_total", endpoint="v1_chat_completions") == before + 1


async def test_unreachable_upstream_is_a_502_in_the_api_format() -> None:
    from proxy_plugin.core import OptimizerCore
    from proxy_plugin.gateway import start_gateway

    async with stand_ins() as services:
        running = await start_gateway("127.0.0.1:0", "127.0.0.1:1", core=OptimizerCore(services.config()))
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    running.url + "/v1/messages",
                    json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
                ) as response:
                    body = await response.json()
                    assert response.status == 502 and body["type"] == "error"
                    assert body["error"]["type"] == "api_error" and "unreachable" in body["error"]["message"]
                async with session.post(
                    running.url + "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}
                ) as response:
                    assert response.status == 502 and (await response.json())["error"]["type"] == "api_error"
        finally:
            await running.stop(flush_timeout_s=0.5)


async def test_command_mode_optimizes_only_opt_requests() -> None:
    async with (
        stand_ins(tuner=StandInTuner(**TUNED)) as services,
        gateway_chain(services.config(always_on=False)) as (gw, tap, emu),
    ):
        via, _ = _clients(gw, emu)
        await via.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "/opt Summarise: a"}])
        assert _sent(tap)["messages"] == [{"role": "user", "content": "Summarise: a"}]
        assert _ran_with(emu, 1) == [TUNED["num_ctx"]]
        await via.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Summarise: b"}])
        assert [p for p, _ in tap.bodies].count("/v1/chat/completions") == 1  # relayed as the client sent it
        assert _ran_with(emu, 1) == [DEFAULT_CTX]


async def test_mixing_native_and_compatible_clients_no_longer_reloads(chain) -> None:
    _services, gw, _tap, emu = chain
    native = {"model": MODEL, "messages": MESSAGES, "stream": False, "options": TUNED}
    async with aiohttp.ClientSession() as session:
        for url in (gw.url, emu.url):  # through the gateway, then straight to Ollama
            via = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            before = sum(emu.reloads.values())
            for _ in range(2):
                async with session.post(url + "/api/chat", json=native) as response:
                    assert response.status == 200
                await via.chat.completions.create(model=MODEL, messages=MESSAGES)
            reloads = sum(emu.reloads.values()) - before
            assert reloads == (0 if url == gw.url else 3), url  # /v1 without num_ctx reloads to the default


async def test_translated_requests_carry_the_loop_guard(chain) -> None:
    _services, gw, tap, _emu = chain
    own = gw.gateway.hops.gateway_id
    async with aiohttp.ClientSession() as session:
        for path, body in (
            ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES}),
            ("/v1/responses", {"model": MODEL, "input": "x", "stream": True}),
        ):
            async with session.post(gw.url + path, json=body, headers={HOP_HEADER: "gw-in-front"}) as response:
                assert response.status == 200
            assert tap.headers[-1][HOP_HEADER] == f"gw-in-front, {own}"  # a loop through other proxies ends here
            async with session.post(gw.url + path, json=body, headers={HOP_HEADER: own}) as response:
                assert response.status == 508


async def test_bodies_nested_deeper_than_python_goes_are_relayed_untouched(chain) -> None:
    _services, gw, tap, _emu = chain
    async with aiohttp.ClientSession() as session:
        for depth in (900, 5000):  # 900: decodes, too deep to encode again; 5000: arguments too deep to decode
            nested = "[" * depth + "]" * depth
            tools = f'[{{"type":"function","function":{{"name":"f","parameters":{nested}}}}}]'
            calls = f'[{{"function":{{"name":"f","arguments":"{nested}"}}}}]'
            for raw in (
                f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"tools":{tools}}}',
                f'{{"model":"{MODEL}","messages":[{{"role":"assistant","content":null,"tool_calls":{calls}}}]}}',
            ):
                async with session.post(gw.url + "/v1/chat/completions", data=raw.encode()) as response:
                    assert response.status in (200, 400)  # what the emulator answers; never the gateway's 500
                assert ("/v1/chat/completions", raw.encode()) in tap.bodies


async def test_flush_covers_answers_whose_outcome_waits_for_ollamas_process_list(chain) -> None:
    services, gw, _tap, emu = chain
    gate, read_ps = asyncio.Event(), gw.gateway.loaded_models.refresh

    async def held(session) -> None:  # after a runner load the gateway reads /api/ps before queueing the outcome
        await gate.wait()
        await read_ps(session)

    gw.gateway.loaded_models.refresh = held
    via, _ = _clients(gw, emu)
    answer = await via.chat.completions.create(model=MODEL, messages=MESSAGES)  # the client has it all
    flushed = asyncio.create_task(gw.gateway.flush())
    await asyncio.wait({flushed}, timeout=0)
    assert not flushed.done() and services.tuner.outcomes == []
    gate.set()
    await flushed
    assert [o.eval_count for o in services.tuner.outcomes] == [answer.usage.completion_tokens]
