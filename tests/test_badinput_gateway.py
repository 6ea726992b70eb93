"""Bad input through the gateway (real matcher + tuner + emulator): same answer as Ollama itself, or a 4xx
JSON error from the gateway; never a 5xx, never a crash, and no change to stored state."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_badinput_grpc import snapshot

from plugin_fixtures import gateway_chain, plugin_config

UNKNOWN = "no-such-model:1b"
KNOWN = "llama3.2:3b"
MAX_BODY = 1 << 20
EXAMPLES = 150
CONFIG = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
tried: Counter[str] = Counter()


def post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _nested(depth: int) -> bytes:
    return b'{"model":"%s","messages":' % UNKNOWN.encode() + b"[" * depth + b"]" * depth + b"}"


_weird_value = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.integers(-(10**30), 10**30),
    st.just(10**400),
    st.floats(),
    st.text(max_size=20),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.just(-4096),
)
_messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "x" * 50, ""]),
                "content": st.one_of(st.text(max_size=100), _weird_value),
            }
        ),
        max_size=10,
    ),
    st.just([{"role": "user", "content": f"message {i}"} for i in range(10_000)]),  # a chat of 10,000 messages
    _weird_value,
)
_payload = st.fixed_dictionaries(
    {"model": st.one_of(st.just(UNKNOWN), st.just(UNKNOWN.upper()), _weird_value)},
    optional={
        "messages": _messages,
        "prompt": st.one_of(st.text(max_size=200), _weird_value),
        "stream": st.one_of(st.booleans(), _weird_value),
        "options": st.one_of(
            st.dictionaries(st.sampled_from(["num_ctx", "num_batch", "num_predict", "seed"]), _weird_value, max_size=4),
            _weird_value,
        ),
    },
)
_body = st.one_of(
    _payload.map(lambda p: json.dumps(p, allow_nan=True).encode()),  # NaN/Infinity literals included
    st.binary(max_size=300),  # not UTF-8, not JSON
    st.just(b""),
    st.just(b"\xff\xfe{\x00"),
    st.just(b'{"model": "' + b"\xc3\x28" * 20 + b'"}'),
    st.integers(100, 20_000).map(_nested),  # deeply nested JSON
    st.just(b'{"model":"%s","prompt":"%s"}' % (UNKNOWN.encode(), b"x" * (MAX_BODY + 10))),  # oversize
)


async def _check(port: int, upstream_port: int, pool, prop: Callable[[], None]) -> None:  # type: ignore[no-untyped-def]
    before = await snapshot(pool)
    await asyncio.to_thread(prop)
    assert await snapshot(pool) == before


async def test_gateway_bad_bodies_pass_through_cleanly(matcher, tuner, pool) -> None:
    cfg = plugin_config(matcher.address, tuner.address, max_body_bytes=MAX_BODY)
    async with gateway_chain(cfg) as (gw, _tap, emu):
        upstream = int(emu.url.rsplit(":", 1)[1])

        @CONFIG
        @given(st.sampled_from(["/api/chat", "/api/generate"]), _body)
        def bodies(path: str, body: bytes) -> None:
            tried["gateway.body"] += 1
            status, answer = post(gw.port, path, body)
            if len(body) > MAX_BODY:
                assert status == 413 and "error" in json.loads(answer)
                return
            direct_status, _ = post(upstream, path, body)
            # Clean passthrough: exactly Ollama's (here the emulator's) status; a 5xx only when it said so.
            assert status == direct_status, (status, direct_status, body[:100])
            if 400 <= status < 500:
                assert "error" in json.loads(answer)

        await _check(gw.port, upstream, pool, bodies)
        await gw.gateway.flush()
        body = json.dumps({"model": KNOWN, "prompt": "still up", "stream": False}).encode()
        status, _ = await asyncio.to_thread(post, gw.port, "/api/generate", body)
        assert status == 200
    print(f"\nbad-input (gateway) inputs tried: {dict(tried)}")


async def test_gateway_known_model_with_absurd_options_is_answered_by_ollama(matcher, tuner) -> None:
    cfg = plugin_config(matcher.address, tuner.address)
    async with gateway_chain(cfg) as (gw, _tap, emu):
        upstream = int(emu.url.rsplit(":", 1)[1])

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.dictionaries(st.sampled_from(["num_ctx", "num_batch", "num_predict"]), _weird_value, min_size=1))
        def options(opts: dict) -> None:
            tried["gateway.options"] += 1
            body = json.dumps({"model": KNOWN, "prompt": "hello there", "stream": False, "options": opts}).encode()
            status, answer = post(gw.port, "/api/generate", body)
            assert status == post(upstream, "/api/generate", body)[0], answer[:200]

        await asyncio.to_thread(options)
    print(f"\nbad-input (gateway options) inputs tried: {dict(tried)}")


async def test_deeply_nested_json_is_relayed_untouched(matcher, tuner) -> None:
    """Python's json gives up (RecursionError) where Ollama answers itself: the bytes must reach Ollama."""
    cfg = plugin_config(matcher.address, tuner.address)
    async with gateway_chain(cfg) as (gw, tap, _emu):
        for path in ("/api/chat", "/api/generate"):
            body = _nested(50_000)
            await asyncio.to_thread(post, gw.port, path, body)
            assert tap.bodies[-1] == (path, body)
            tried["gateway.nested"] += 1
