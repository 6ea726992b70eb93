"""What the gateway knows about its Ollama: the version (/api/version, read at start) and, per model, the
trained context and KV bytes per token (/api/show, read once per model off the request path).

The version says how ``prompt_eval_count`` is counted; the trained context is never exceeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

MAX_MODELS = 1024  # distinct model names remembered (clients may send made-up names)
TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ModelFacts:
    """From /api/show ``model_info``; 0 = unknown."""

    context_length: int = 0
    kv_bytes_per_token: int = 0


def _positive(value: Any, limit: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= limit:
        return value
    return 0


def parse_show(body: Any) -> ModelFacts:
    """``<arch>.context_length`` and f16 KV bytes per token (2 x layers x kv_heads x key/value length x 2)."""
    info = body.get("model_info") if isinstance(body, dict) else None
    if not isinstance(info, dict):
        return ModelFacts()
    arch = info.get("general.architecture")
    if not isinstance(arch, str):
        return ModelFacts()
    context = _positive(info.get(f"{arch}.context_length"), 1 << 24)
    layers = _positive(info.get(f"{arch}.block_count"), 10_000)
    heads = _positive(info.get(f"{arch}.attention.head_count"), 10_000)
    kv_heads = _positive(info.get(f"{arch}.attention.head_count_kv"), 10_000) or heads
    head_dim = _positive(info.get(f"{arch}.attention.key_length"), 100_000)
    if not head_dim and heads:
        head_dim = _positive(info.get(f"{arch}.embedding_length"), 1 << 20) // heads
    return ModelFacts(context, 2 * layers * kv_heads * head_dim * 2)


class UpstreamFacts:
    """Version and per-model facts of one Ollama; lookups never wait (unknown until fetched)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None  # set by the gateway once its session exists
        self.version = ""
        self._models: dict[str, ModelFacts] = {}
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Future[object]] = set()

    async def read_version(self) -> str:
        """Read /api/version (at start); "" when Ollama does not answer."""
        if self.session is None:
            return ""
        body = await self._get(self.session, "GET", "/api/version", None)
        version = body.get("version") if isinstance(body, dict) else None
        self.version = version[:64] if isinstance(version, str) and version.isprintable() else ""
        if self.version:
            log.info("upstream %s: Ollama version %s", self.upstream, self.version)
        return self.version

    def model(self, name: str) -> ModelFacts:
        """Facts known for ``name`` (zeros until /api/show answered); starts the fetch the first time."""
        facts = self._models.get(name)
        session = self.session
        if not self.version and session is not None:  # Ollama was not up at start: ask again
            self._start("version", self.read_version())
        if facts is None and session is not None and len(self._models) < MAX_MODELS:
            self._start("show:" + name, self._show(session, name))
        return facts or ModelFacts()

    def _start(self, key: str, work: Coroutine[Any, Any, object]) -> None:
        """Run ``work`` in the background unless work under ``key`` is still running."""
        if key in self._pending:
            work.close()
            return
        self._pending.add(key)
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, key))

    def _finished(self, task: asyncio.Future[object], key: str) -> None:
        self._tasks.discard(task)
        self._pending.discard(key)

    async def _show(self, session: aiohttp.ClientSession, name: str) -> None:
        body = await self._get(session, "POST", "/api/show", {"model": name})
        if body is not None:
            self._models[name] = parse_show(body)

    async def _get(self, session: aiohttp.ClientSession, method: str, path: str, payload: Any) -> Any:
        try:
            async with session.request(
                method, self.upstream + path, json=payload, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            ) as response:
                return await response.json(content_type=None) if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("%s %s failed: %s", method, path, exc)
            return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
