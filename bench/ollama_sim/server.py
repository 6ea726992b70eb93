"""The Ollama HTTP API (aiohttp) over the Engine: /api/chat, /api/generate, /api/ps, /api/tags,
/api/show, /api/version. Field names, units (integer nanoseconds) and error shapes follow Ollama."""
from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timedelta, timezone

from aiohttp import web

from .counts import COUNT_MODES, prompt_counts
from .engine import Engine, ModelNotFound, OutOfMemory, Plan
from .profiles import ModelProfile
from .request import read_body

VERSION = "0.32.15"  # the Ollama release whose behaviour is emulated (reference doc HEAD)
MODIFIED_AT = "2026-08-21T00:00:00Z"


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _digest(model: ModelProfile) -> str:
    return hashlib.sha256(model.name.encode()).hexdigest()


def _details(model: ModelProfile) -> dict:
    return {"parent_model": "", "format": "gguf", "family": model.family, "families": [model.family],
            "parameter_size": model.parameter_size, "quantization_level": model.quantization}


def show_response(name: str, m: ModelProfile) -> web.Response:
    """/api/show for ``m`` under ``name``: details and the GGUF metadata clients read (context length…)."""
    arch = m.family
    info = {"general.architecture": arch, "general.parameter_count": int(m.params),
            f"{arch}.context_length": m.train_ctx, f"{arch}.block_count": m.layers,
            f"{arch}.embedding_length": m.hidden, f"{arch}.attention.head_count": m.heads,
            f"{arch}.attention.head_count_kv": m.kv_heads, f"{arch}.attention.key_length": m.head_dim,
            f"{arch}.attention.value_length": m.head_dim}
    return web.json_response({"modelfile": f"FROM {name}\n", "parameters": "", "template": "{{ .Prompt }}",
                              "details": _details(m), "model_info": info, "capabilities": ["completion"],
                              "modified_at": MODIFIED_AT})


def _metrics(plan: Plan, count_mode: str = "full") -> dict:
    """Final-chunk metrics; zero values are omitted like Go's omitempty (the cached count only when reported)."""
    r = plan.record
    load, prompt, decode = _ns(r.load_s), _ns(r.prompt_eval_s), _ns(r.eval_s)
    out = {"done_reason": r.done_reason, "total_duration": load + prompt + decode, "load_duration": load,
           "prompt_eval_duration": prompt, "eval_count": r.eval_count, "eval_duration": decode}
    counts = prompt_counts(count_mode, r.prompt_eval_count, r.cached_tokens) if r.prompt_eval_count else {}
    return {k: v for k, v in out.items() if v} | counts


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class OllamaApp:
    """Route handlers bound to one Engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.add_routes([
            web.get("/", self.root),
            web.post("/api/chat", self.chat), web.post("/api/generate", self.generate),
            web.get("/api/ps", self.ps), web.get("/api/tags", self.tags),
            web.post("/api/show", self.show), web.get("/api/version", self.version),
        ])
        return app

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": COUNT_MODES[self.engine.count_mode]})

    async def tags(self, request: web.Request) -> web.Response:
        models = [{"name": m.name, "model": m.name, "modified_at": MODIFIED_AT, "size": m.weights_bytes,
                   "digest": _digest(m), "details": _details(m)} for m in self.engine.models.values()]
        return web.json_response({"models": models})

    async def ps(self, request: web.Request) -> web.Response:
        now, models = self.engine.now(), []
        for name, r in self.engine.runners.items():
            if r.load_start > now:
                continue
            expires = datetime.now(timezone.utc) + timedelta(seconds=min(r.expires_at - now, 10 * 365 * 86400))
            models.append({"name": name, "model": name, "size": r.placement.total_bytes, "digest": _digest(r.model),
                           "details": _details(r.model), "expires_at": expires.isoformat().replace("+00:00", "Z"),
                           "size_vram": r.placement.vram_bytes, "context_length": r.opts.num_ctx})
        return web.json_response({"models": models})

    async def show(self, request: web.Request) -> web.Response:
        body = await read_body(request, "ShowRequest")
        name = body.get("model") or body.get("name") or ""
        m = self.engine.models.get(name)
        if m is None:
            return _error(404, f"model '{name}' not found")
        return show_response(m.name, m)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, "ChatRequest")
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        return await self._complete(request, body, "chat", messages)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, "GenerateRequest")
        messages = []
        if body.get("prompt"):
            if body.get("system"):
                messages.append({"role": "system", "content": str(body["system"])})
            messages.append({"role": "user", "content": str(body["prompt"])})
        return await self._complete(request, body, "generate", messages)


    async def _complete(self, request: web.Request, body: dict, endpoint: str,
                        messages: list[dict]) -> web.StreamResponse:
        if not body.get("model"):
            return _error(400, "model is required")
        options = body.get("options") or {}
        try:
            plan = self.engine.schedule(endpoint, str(body["model"]), messages, dict(options), body.get("truncate"),
                                        body.get("shift"), body.get("keep_alive"))
        except ModelNotFound as exc:
            return _error(404, str(exc))
        except OutOfMemory as exc:
            return _error(500, str(exc))
        if plan.record.status != 200:
            await self._until(plan.start)
            return _error(plan.record.status, plan.record.error)
        if body.get("stream", True) is False:
            await self._until(plan.end)
            return web.json_response(self._chunk(endpoint, plan, "".join(plan.pieces)) | {"done": True}
                                     | _metrics(plan, self.engine.count_mode))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for t, piece in zip(plan.token_times, plan.pieces):
            await self._until(t)
            await resp.write(json.dumps(self._chunk(endpoint, plan, piece) | {"done": False}).encode() + b"\n")
        await self._until(plan.end)
        final = self._chunk(endpoint, plan, "") | {"done": True} | _metrics(plan, self.engine.count_mode)
        await resp.write(json.dumps(final).encode() + b"\n")
        await resp.write_eof()
        return resp

    def _chunk(self, endpoint: str, plan: Plan, text: str) -> dict:
        base = {"model": plan.record.model, "created_at": _now_iso()}
        if endpoint == "chat":
            return base | {"message": {"role": "assistant", "content": text}}
        return base | {"response": text}

    async def _until(self, sim_t: float) -> None:
        delay = self.engine.wall_delay(sim_t)
        if delay > 0:
            await asyncio.sleep(delay)
