"""The emulator's compatible endpoints, served as Ollama serves them: the request is decoded into the
native request Ollama's compatibility layer builds (client ``options`` and ``num_ctx`` have no field there,
so the model runs at its default context), the native handler runs, and its output is rewritten.
The translation is the one the gateway uses (``proxy_plugin.compat_*``, a mirror of Ollama's
``openai/``, ``anthropic/`` and ``middleware/``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web

from proxy_plugin.compat_anthropic import MessagesDoor
from proxy_plugin.compat_openai import ChatDoor, CompletionDoor, EmbeddingDoor
from proxy_plugin.compat_responses import ResponsesDoor
from proxy_plugin.compat_wire import Door, Translated, go_encoded

if TYPE_CHECKING:
    from .server import OllamaApp

MODIFIED_AT = "2026-08-21T00:00:00Z"


class CompatRoutes:
    """``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``, ``/v1/messages``
    and ``/v1/models``."""

    def __init__(self, app: OllamaApp) -> None:
        self.app = app

    def routes(self) -> list[web.RouteDef]:
        doors: dict[str, Door] = {
            "/v1/chat/completions": ChatDoor(),
            "/v1/completions": CompletionDoor(),
            "/v1/embeddings": EmbeddingDoor(),
            "/v1/responses": ResponsesDoor(),
            "/v1/messages": MessagesDoor(),
        }
        defs = [web.post(path, self._handler(door)) for path, door in doors.items()]
        return [*defs, web.get("/v1/models", self.models)]

    def _handler(self, door: Door):
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                translated = door.translate(json.loads(await request.read()))
            except (ValueError, UnicodeDecodeError) as exc:
                return _bad_request(door, str(exc))
            except RecursionError:  # Go decodes up to 10,000 levels; deeper than Python goes is refused here
                return _bad_request(door, "request nested too deep")
            if not isinstance(translated, Translated):
                return _bad_request(door, translated)
            if translated.endpoint == "embed":
                return await self.app.run_embed(translated.native, translated.reply)
            return await self.app.run(request, translated.endpoint, translated.native, translated.reply)

        return handle

    async def models(self, request: web.Request) -> web.Response:
        """``ListMiddleware``: /api/tags as an OpenAI model list."""
        created = int(datetime.fromisoformat(MODIFIED_AT).timestamp())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "library"}
            for name in self.app.engine.models
        ]
        return web.Response(body=go_encoded({"object": "list", "data": data}), content_type="application/json")


def _bad_request(door: Door, message: str) -> web.Response:
    return web.Response(status=400, body=door.error(message, 400), content_type="application/json")
