"""Serving the Ollama API for both stand-ins (the emulator and the llama.cpp backend): the native routes, the
lifecycle of an aiohttp application on a loopback port, and the command line's shared flags and loop."""

from __future__ import annotations

import argparse
import asyncio
from typing import Protocol, Self

from aiohttp import web

MAX_BODY_BYTES = 64 * 1024**2  # long-context prompts; aiohttp's default (1 MiB) would refuse them


class NativeApi(Protocol):
    """The handlers of Ollama's native endpoints that both stand-ins serve."""

    async def root(self, request: web.Request) -> web.StreamResponse: ...
    async def chat(self, request: web.Request) -> web.StreamResponse: ...
    async def generate(self, request: web.Request) -> web.StreamResponse: ...
    async def ps(self, request: web.Request) -> web.StreamResponse: ...
    async def tags(self, request: web.Request) -> web.StreamResponse: ...
    async def show(self, request: web.Request) -> web.StreamResponse: ...
    async def version(self, request: web.Request) -> web.StreamResponse: ...


def native_routes(api: NativeApi) -> list[web.RouteDef]:
    return [
        web.get("/", api.root),
        web.post("/api/chat", api.chat),
        web.post("/api/generate", api.generate),
        web.get("/api/ps", api.ps),
        web.get("/api/tags", api.tags),
        web.post("/api/show", api.show),
        web.get("/api/version", api.version),
    ]


def application(routes: list[web.RouteDef]) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(routes)
    return app


class Served:
    """An application bound to host:port on start (port 0: an ephemeral port, known once started); use as
    ``async with``. Subclasses build the application and may release their own resources after it stops."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    def build(self) -> web.Application:
        raise NotImplementedError

    async def released(self) -> None:
        """Called by stop() once the application no longer serves."""

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.build(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            await self.released()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def add_server_flags(
    parser: argparse.ArgumentParser, num_ctx: int | None, num_ctx_help: str, keep_alive_s: float
) -> None:
    """The flags both stand-ins take, named after the Ollama settings they mirror."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--num-ctx", type=int, default=num_ctx, help=num_ctx_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-alive", type=float, default=keep_alive_s, help="OLLAMA_KEEP_ALIVE in seconds (<0: forever)"
    )


def serve(server: Served, what: str) -> None:
    """Serve until interrupted, after one line naming ``what`` listens where."""

    async def forever() -> None:
        async with server:
            print(f"{what} listening on {server.url}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(forever())
    except KeyboardInterrupt:
        pass
