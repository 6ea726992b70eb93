"""The Ollama HTTP API (aiohttp) over the Engine: /api/chat, /api/generate, /api/ps, /api/tags,
/api/show, /api/version, /api/embed, and the compatible /v1 endpoints. Field names, units (integer nanoseconds) and
error shapes follow Ollama."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web

from proxy_plugin.compat_wire import Reply

from .compat import MODIFIED_AT, CompatRoutes
from .counts import COUNT_MODES, prompt_counts
from .embed import INVALID_INPUT, embed_inputs, embedding, input_tokens
from .engine import Engine, ModelNotFound, OutOfMemory, Plan
from .output import tool_calls
from .profiles import ModelProfile
from .request import read_body
from .serving import application, native_routes

VERSION = "0.32.15"  # the Ollama release whose behaviour is emulated (reference doc HEAD)


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat().replace("+00:00", "Z")


def _digest(model: ModelProfile) -> str:
    return hashlib.sha256(model.name.encode()).hexdigest()


def _details(model: ModelProfile) -> dict:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization,
    }


def show_response(name: str, m: ModelProfile) -> web.Response:
    """/api/show for ``m`` under ``name``: details and the GGUF metadata clients read (context length…)."""
    arch = m.family
    info = {
        "general.architecture": arch,
        "general.parameter_count": int(m.params),
        f"{arch}.context_length": m.train_ctx,
        f"{arch}.block_count": m.layers,
        f"{arch}.embedding_length": m.hidden,
        f"{arch}.attention.head_count": m.heads,
        f"{arch}.attention.head_count_kv": m.kv_heads,
        f"{arch}.attention.key_length": m.head_dim,
        f"{arch}.attention.value_length": m.head_dim,
    }
    return web.json_response(
        {
            "modelfile": f"FROM {name}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": _details(m),
            "model_info": info,
            "capabilities": ["completion"],
            "modified_at": MODIFIED_AT,
        }
    )


def _metrics(plan: Plan, count_mode: str = "full") -> dict:
    """Final-chunk metrics; zero values are omitted like Go's omitempty (the cached count only when reported)."""
    r = plan.record
    load, prompt, decode = _ns(r.load_s), _ns(r.prompt_eval_s), _ns(r.eval_s)
    out = {
        "done_reason": r.done_reason,
        "total_duration": load + prompt + decode,
        "load_duration": load,
        "prompt_eval_duration": prompt,
        "eval_count": r.eval_count,
        "eval_duration": decode,
    }
    counts = prompt_counts(count_mode, r.prompt_eval_count, r.cached_tokens) if r.prompt_eval_count else {}
    return {k: v for k, v in out.items() if v} | counts


def _error(status: int, message: str, reply: Reply | None = None) -> web.Response:
    if reply is not None:
        return web.Response(status=status, body=reply.error(message), content_type="application/json")
    return web.json_response({"error": message}, status=status)


def _answer(native: dict, reply: Reply | None) -> web.Response:
    if reply is not None:
        return web.Response(body=reply.answer(native), content_type=reply.content_type())
    return web.json_response(native)


def _line(native: dict, reply: Reply | None) -> bytes:
    return reply.chunk(native) if reply is not None else json.dumps(native).encode() + b"\n"


class OllamaApp:
    """Route handlers bound to one Engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def build(self) -> web.Application:
        return application([*native_routes(self), web.post("/api/embed", self.embed), *CompatRoutes(self).routes()])

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": COUNT_MODES[self.engine.count_mode]})

    async def tags(self, request: web.Request) -> web.Response:
        models = [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": MODIFIED_AT,
                "size": m.weights_bytes,
                "digest": _digest(m),
                "details": _details(m),
            }
            for m in self.engine.models.values()
        ]
        return web.json_response({"models": models})

    async def ps(self, request: web.Request) -> web.Response:
        now, models = self.engine.now(), []
        for name, r in self.engine.runners.items():
            if r.load_start > now:
                continue
            expires = datetime.now(UTC) + timedelta(seconds=min(r.expires_at - now, 10 * 365 * 86400))
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": r.placement.total_bytes,
                    "digest": _digest(r.model),
                    "details": _details(r.model),
                    "expires_at": expires.isoformat().replace("+00:00", "Z"),
                    "size_vram": r.placement.vram_bytes,
                    "context_length": r.opts.num_ctx,
                }
            )
        return web.json_response({"models": models})

    async def show(self, request: web.Request) -> web.Response:
        body = await read_body(request, "ShowRequest")
        name = body.get("model") or body.get("name") or ""
        m = self.engine.models.get(name)
        if m is None:
            return _error(404, f"model '{name}' not found")
        return show_response(m.name, m)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self.run(request, "chat", await read_body(request, "ChatRequest"))

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self.run(request, "generate", await read_body(request, "GenerateRequest"))

    async def embed(self, request: web.Request) -> web.Response:
        return await self.run_embed(await read_body(request, "EmbedRequest"))

    async def run_embed(self, body: dict, reply: Reply | None = None) -> web.Response:
        """Run a decoded /api/embed request (``reply``: as /v1/embeddings)."""
        inputs = embed_inputs(body.get("input"))
        if inputs is None:
            return _error(400, INVALID_INPUT, reply)
        name = str(body.get("model") or "")
        plan = await self._scheduled(
            lambda: self.engine.embed(
                name, inputs, dict(body.get("options") or {}), body.get("truncate"), body.get("keep_alive")
            ),
            reply,
        )
        if isinstance(plan, web.Response):
            return plan
        await self._until(plan.end)
        model, dimensions, r = self.engine.models[name], int(body.get("dimensions") or 0), plan.record
        limit = r.runner["num_ctx"]
        vectors = [embedding(model, text, min(input_tokens(model, text), limit), dimensions) for text in inputs]
        answer = {
            "model": name,
            "embeddings": vectors,
            "total_duration": _ns(r.total_s),
            "load_duration": _ns(r.load_s),
            "prompt_eval_count": r.prompt_eval_count,
        }
        return _answer({k: v for k, v in answer.items() if v or k == "embeddings"}, reply)

    async def _scheduled(self, schedule: Callable[[], Plan], reply: Reply | None) -> Plan | web.Response:
        """The plan of an accepted request, or the error Ollama answers (after any wait it would make)."""
        try:
            plan = schedule()
        except ModelNotFound as exc:
            return _error(404, str(exc), reply)
        except OutOfMemory as exc:
            return _error(500, str(exc), reply)
        if plan.record.status != 200:
            await self._until(plan.start)
            return _error(plan.record.status, plan.record.error, reply)
        return plan

    async def run(
        self, request: web.Request, endpoint: str, body: dict, reply: Reply | None = None
    ) -> web.StreamResponse:
        """Run a decoded chat or generate request."""
        if endpoint == "chat":
            return await self._complete(
                request, body, endpoint, [m for m in body.get("messages") or [] if isinstance(m, dict)], reply
            )
        messages = []
        if body.get("prompt"):
            if body.get("system"):
                messages.append({"role": "system", "content": str(body["system"])})
            messages.append({"role": "user", "content": str(body["prompt"])})
        return await self._complete(request, body, endpoint, messages, reply)

    async def _complete(
        self, request: web.Request, body: dict, endpoint: str, messages: list[dict], reply: Reply | None = None
    ) -> web.StreamResponse:
        """The native handler; with ``reply`` its output is rewritten as Ollama's compatibility layer does."""
        if not body.get("model"):
            return _error(400, "model is required", reply)
        options = body.get("options") or {}
        plan = await self._scheduled(
            lambda: self.engine.schedule(
                endpoint,
                str(body["model"]),
                messages,
                dict(options),
                body.get("truncate"),
                body.get("shift"),
                body.get("keep_alive"),
            ),
            reply,
        )
        if isinstance(plan, web.Response):
            return plan
        calls = tool_calls(body.get("tools"), messages, plan.pieces) if endpoint == "chat" else []
        if body.get("stream", True) is False:
            await self._until(plan.end)
            final = self._chunk(endpoint, plan, "" if calls else "".join(plan.pieces), plan.end, calls) | {"done": True}
            return _answer(final | _metrics(plan, self.engine.count_mode), reply)
        resp = web.StreamResponse(headers=reply.stream_headers() if reply else {"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        if calls:  # a tool-calling model's parser holds the call back until it is complete
            await self._until(plan.end)
            await resp.write(_line(self._chunk(endpoint, plan, "", plan.end, calls) | {"done": False}, reply))
        else:
            for t, piece in zip(plan.token_times, plan.pieces):
                await self._until(t)
                await resp.write(_line(self._chunk(endpoint, plan, piece, t) | {"done": False}, reply))
        await self._until(plan.end)
        final = self._chunk(endpoint, plan, "", plan.end) | {"done": True} | _metrics(plan, self.engine.count_mode)
        await resp.write(_line(final, reply))
        await resp.write_eof()
        return resp

    def _chunk(self, endpoint: str, plan: Plan, text: str, sim_t: float, calls: list[dict] | None = None) -> dict:
        """One chunk, stamped (like Ollama) with the time it is produced, on the engine's clock."""
        base = {"model": plan.record.model, "created_at": _iso(self.engine.epoch + sim_t)}
        if endpoint == "chat":
            message = {"role": "assistant", "content": text} | ({"tool_calls": calls} if calls else {})
            return base | {"message": message}
        return base | {"response": text}

    async def _until(self, sim_t: float) -> None:
        delay = self.engine.wall_delay(sim_t)
        if delay > 0:
            await asyncio.sleep(delay)
