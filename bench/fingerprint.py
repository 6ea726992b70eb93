"""Fingerprint speed: all windows (16..1024) of a 1,024-token prompt, and its Match key (the plugin's memo key),
median over many runs, with the kernel a service uses (``warm_up``: compiled unless
OPTIMIZER_FINGERPRINT_KERNEL=numpy), then with the numpy code (``numpy_*``); and the time and RSS the warm-up took.

Run: .venv/bin/python -m bench.fingerprint [--runs 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable

import psutil

from matcher_service.settings import MatcherSettings
from ollama_optimizer.fingerprint_kernel import KernelSettings
from ollama_optimizer.settings_env import load
from prompt_fingerprint import TOKEN_RE, fingerprint, kernel, match_key

_WORDS = (
    "You are a helpful assistant . Answer the user's question using the context below , "
    "citing sources [ 1 ] when possible ; order 12345 at 2024-01-05 : status = ok"
).split()


def prompt_of_tokens(tokens: int, seed: int = 1) -> str:
    """Natural-looking text with exactly ``tokens`` tokens."""
    rng = random.Random(seed)
    words = TOKEN_RE.findall(" ".join(rng.choice(_WORDS) for _ in range(tokens)))
    return " ".join(words[:tokens])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3000)
    args = parser.parse_args()
    settings = MatcherSettings()
    text = prompt_of_tokens(1024)
    fingerprints = fingerprint(text, settings.shingle_size, settings.normalize)
    assert fingerprints.unit_count == 1024

    def timings(work: Callable[[], object]) -> list[float]:
        for _ in range(200):  # warm-up
            work()
        samples = []
        for _ in range(args.runs):
            started = time.perf_counter()
            work()
            samples.append((time.perf_counter() - started) * 1e6)
        return sorted(samples)

    def fingerprint_text() -> object:
        return fingerprint(text, settings.shingle_size, settings.normalize)

    def match_key_text() -> object:
        return match_key(text)

    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    active = kernel.warm_up(load(KernelSettings, os.environ).kernel)
    warm_up_s = time.perf_counter() - started
    rss_added = process.memory_info().rss - rss_before
    figures: dict[str, object] = {}
    for name in ("fingerprint", "match_key", "numpy", "numpy_match_key"):
        if name == "numpy":
            kernel.use_numpy()
        samples = timings(match_key_text if name.endswith("match_key") else fingerprint_text)
        figures |= {
            f"{name}_us_median": round(statistics.median(samples), 1),
            f"{name}_us_p90": round(samples[int(0.9 * len(samples))], 1),
            f"{name}_us_min": round(samples[0], 1),
        }
    result = {
        "bench": "fingerprint",
        "tokens": 1024,
        "windows": len(fingerprints.windows),
        "runs": args.runs,
        "shingle_size": settings.shingle_size,
        "normalize": settings.normalize,
        "text_bytes": len(text),
        "kernel": active,
        "warm_up_s": round(warm_up_s, 2),  # compiling, or loading from numba's cache (NUMBA_CACHE_DIR)
        "warm_up_rss_mib": round(rss_added / 2**20),  # RSS the kernel added to this process
        **figures,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
