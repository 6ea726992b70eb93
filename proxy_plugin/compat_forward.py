"""The gateway's compatible front doors: translate, optimize, run natively, translate the answer back.

Ollama ignores ``options`` on ``/v1/*``, so a compatible request is sent to the native endpoint Ollama's
own compatibility layer would have run, with the optimizer's ``num_ctx``/``num_batch`` added, and the
native answer is rewritten object by object (streams stay streams). A request a door cannot translate
faithfully is relayed untouched, so Ollama answers it as it always would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from . import metrics
from .command import strip_command
from .compat_anthropic import MessagesDoor
from .compat_openai import ChatDoor, CompletionDoor, EmbeddingDoor
from .compat_responses import ResponsesDoor
from .compat_wire import (
    JSON_TYPE,
    Door,
    NdjsonLines,
    Translated,
    error_message,
    go_encoded,
)
from .forwarded import forward_headers
from .runner_loads import answer_clock

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger(__name__)

_REWRITTEN = frozenset({"content-type", "content-encoding"})  # the answer is the door's, not the native one

COMPAT_DOORS: dict[str, Door] = {
    "/v1/chat/completions": ChatDoor(),
    "/v1/completions": CompletionDoor(),
    "/v1/embeddings": EmbeddingDoor(),
    "/v1/responses": ResponsesDoor(),
    "/v1/messages": MessagesDoor(),
}


def _label(path: str) -> str:
    """The ``endpoint`` metric label of a door: ``v1_chat_completions``, ``v1_messages``, ..."""
    return path.strip("/").replace("/", "_")


def _gateway_error(request: web.Request, door: Door, status: int, message: str) -> web.Response:
    """An error the gateway itself answers, in the door's API format."""
    metrics.REQUESTS.labels(_label(request.path), str(status)).inc()
    return web.Response(status=status, body=door.error(message, status), content_type=JSON_TYPE)


async def serve_compat(gw: Gateway, request: web.Request, door: Door, headers: dict[str, str]) -> web.StreamResponse:
    """Serve one compatible request; ``headers`` go upstream with the native request; the upstream's
    own headers come back with the answer (but those describing the native body)."""
    received = time.monotonic()
    label = _label(request.path)
    limit = gw.config.max_body_bytes or gw.config.optimize_max_body_bytes  # a door must translate: bounded
    if (request.content_length or 0) > limit:
        return _gateway_error(request, door, 413, f"request body larger than {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _gateway_error(request, door, 413, f"request body larger than {limit} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    try:
        translated = door.translate(payload)
    except RecursionError:  # nested deeper than Python decodes (Ollama's decoder goes deeper)
        translated = "nested too deep to translate"
    if not isinstance(translated, Translated):
        metrics.COMPAT_UNTRANSLATED.labels(label).inc()
        return await gw._relay(request, label, body)
    native = translated.native if gw.config.always_on else strip_command(translated.native)
    if native is None:  # no /opt command: what Ollama does with it is what the client asked for
        return await gw._relay(request, label, body)
    to_send, decision = await gw.core.prepare(native, translated.endpoint)
    try:
        data = go_encoded(to_send)
    except RecursionError:
        metrics.COMPAT_UNTRANSLATED.labels(label).inc()
        return await gw._relay(request, label, body)
    sent = gw.sending(decision)
    with gw.outcome_pending():
        answer: _Answer | None = None
        try:
            answer = await _run(gw, request, door, translated, data, headers)
        finally:
            gw.runner_loads.finished(sent, *answer_clock(answer.stats if answer is not None else None))
        if answer.answered:
            gw.learn(to_send, decision, answer.stats, received, answer.first_chunk, sent)
    return answer.response


@dataclass
class _Answer:
    """The response, whether Ollama answered 200, its final object (None when a stream was cut)."""

    response: web.StreamResponse
    answered: bool = False
    stats: dict[str, Any] | None = None
    first_chunk: float | None = None


async def _run(
    gw: Gateway,
    request: web.Request,
    door: Door,
    translated: Translated,
    data: bytes,
    headers: dict[str, str],
) -> _Answer:
    """Send the native request (``data``) and write the translated answer."""
    label = _label(request.path)
    reply = translated.reply
    response: web.StreamResponse | None = None
    session = gw._session
    assert session is not None
    try:
        async with session.post(
            gw.upstream + translated.path,
            data=data,
            headers={**headers, "Content-Type": JSON_TYPE},
            allow_redirects=False,
        ) as upstream:
            metrics.REQUESTS.labels(label, str(upstream.status)).inc()
            passed_on = forward_headers(upstream.headers, drop=_REWRITTEN)
            if upstream.status != 200:
                message = error_message(await upstream.read())
                return _Answer(
                    web.Response(
                        status=upstream.status, body=reply.error(message), headers=passed_on, content_type=JSON_TYPE
                    )
                )
            if not reply.stream:
                final = _parse(await upstream.read())
                answered = time.monotonic()
                body = reply.answer(final)
                return _Answer(
                    web.Response(body=body, headers=passed_on, content_type=reply.content_type()), True, final, answered
                )
            stream_headers = CIMultiDict(passed_on)
            stream_headers.update(reply.stream_headers())
            response = web.StreamResponse(headers=stream_headers)
            await response.prepare(request)
            lines, last = NdjsonLines(), None
            first_chunk: float | None = None
            async for chunk in upstream.content.iter_any():
                first_chunk = first_chunk or time.monotonic()
                for obj in lines.feed(chunk):
                    last = obj
                    await response.write(reply.chunk(obj))
            for obj in lines.close():
                last = obj
                await response.write(reply.chunk(obj))
            await response.write_eof()
            stats = last if last is not None and last.get("done") is True else None
            return _Answer(response, True, stats, first_chunk)
    except (asyncio.CancelledError, ConnectionResetError):
        metrics.CLIENT_DISCONNECTS.labels(label).inc()
        raise
    except aiohttp.ClientError as exc:
        metrics.UPSTREAM_ERRORS.labels(label).inc()
        if response is not None and response.prepared:
            raise
        return _Answer(_gateway_error(request, door, 502, f"upstream {gw.upstream} unreachable: {exc}"))


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
