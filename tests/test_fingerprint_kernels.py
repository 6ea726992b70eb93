"""The compiled fingerprint kernels give the numpy code's bits, and services choose them as configured."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prompt_fingerprint
from ollama_optimizer.fingerprint_kernel import KernelSettings, warm_up_at_start
from ollama_optimizer.settings_env import ConfigError, load
from prompt_fingerprint import approximate_count, fingerprint, kernel, match_key
from prompt_fingerprint.tokens import COUNT_CHUNK_CHARS

_WORDS = (
    "the a order id 12345 deadbeef 2024-01-05 0x1f 3.14 , . ; : ( ) { } [ ] \" ' system: user: assistant: "
    "tool: Grüße naïve 東京 мир ÉCOLE İstanbul ß ﬁ 🙂 snake_case CamelCase e9f0 — « »"
).split(" ")
_SEPARATORS = (" ", " ", " ", "\n", "\t", "", ", ", "  ")


@st.composite
def texts(draw: st.DrawFn) -> str:
    """Word soup around every window size, optionally a chat, with arbitrary characters mixed in."""
    size = draw(st.sampled_from((1, 3, 5, 15, 17, 64, 200, 1023, 1100, 2500)))
    words = draw(st.lists(st.sampled_from(_WORDS), min_size=size, max_size=size))
    separators = draw(st.lists(st.sampled_from(_SEPARATORS), min_size=size, max_size=size))
    text = "".join(w + s for w, s in zip(words, separators))
    noise = draw(st.text(max_size=40))
    at = draw(st.integers(0, len(text)))
    text = text[:at] + noise + text[at:]
    if draw(st.booleans()):
        text = "system: " + text + "\nuser: " + draw(st.text(max_size=200)) + "\n"
    return text if any(ch.isalnum() or not ch.isspace() for ch in text) else text + "x"


def _without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing numba fails from now on (and the compiled kernels must be imported anew)."""
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "prompt_fingerprint.compiled", raising=False)
    monkeypatch.delattr(prompt_fingerprint, "compiled", raising=False)


def _everything(text: str) -> list[object]:
    """Match key, token count and the fingerprints of every setting."""
    results: list[object] = [match_key(text), approximate_count(text)]
    for shingle_size in (3, 4, 5):
        for normalize in (False, True):
            results.append(fingerprint(text, shingle_size, normalize))
    return results


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(texts())
def test_compiled_kernels_give_the_numpy_bits(text: str) -> None:
    _assert_same_with_both_kernels(lambda: _everything(text))


def _assert_same_with_both_kernels(compute: Callable[[], object]) -> None:
    kernel.use_numpy()
    expected = compute()
    try:
        assert kernel.warm_up() == kernel.COMPILED
        assert compute() == expected
    finally:
        kernel.use_numpy()


@pytest.mark.parametrize("shift", [-1, 0, 1, 2])
def test_the_compiled_count_continues_a_word_across_chunks(shift: int) -> None:
    """A word or punctuation straddling the count's chunk boundary is counted once, as numpy counts it."""
    text = "x" * (COUNT_CHUNK_CHARS + shift - 3) + "abc,de fg" + " naïve, 東京 — ok" * 5000
    _assert_same_with_both_kernels(lambda: approximate_count(text))


def test_the_numpy_setting_keeps_numba_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIMIZER_FINGERPRINT_KERNEL", "NumPy")
    _without_numba(monkeypatch)
    assert warm_up_at_start(load(KernelSettings, os.environ)) == kernel.NUMPY and kernel.compiled_kernels() is None
    assert fingerprint("still fingerprinted").windows == (2,)


def test_an_unknown_kernel_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="OPTIMIZER_FINGERPRINT_KERNEL: must be compiled or numpy, got 'fast'"):
        load(KernelSettings, {"OPTIMIZER_FINGERPRINT_KERNEL": "fast"})
    assert load(KernelSettings, {}).kernel == kernel.COMPILED


def test_a_missing_numba_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _without_numba(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=kernel.__name__):
        assert kernel.warm_up() == kernel.NUMPY
    assert "import of numba" in caplog.text and kernel.active_kernel() == kernel.NUMPY


def test_the_kernel_is_compiled_only_by_warm_up(fingerprint_kernel: str) -> None:
    """Until ``warm_up`` (in a fresh process: never), fingerprints come from numpy; after it, from its choice."""
    assert kernel.active_kernel() == fingerprint_kernel
    kernel.use_numpy()
    assert kernel.compiled_kernels() is None


def test_compiled_kernels_that_disagree_with_numpy_are_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stale numba cache (numba does not see changed constants of other modules) must not change fingerprints."""
    from prompt_fingerprint import compiled

    real = compiled.simhash
    monkeypatch.setattr(compiled, "simhash", lambda hashes, ws, k: real(hashes, ws, k) ^ np.uint64(1 << 40))
    with caplog.at_level(logging.ERROR, logger=kernel.__name__):
        assert kernel.warm_up() == kernel.NUMPY
    assert "disagree" in caplog.text and kernel.compiled_kernels() is None


def test_warm_up_runs_every_kernel_before_a_request_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel first run on a request would be compiled there (milliseconds from numba's cache, seconds without)."""
    from prompt_fingerprint import compiled

    used: set[str] = set()
    for name in ("token_hashes", "token_count", "simhash"):
        real = getattr(compiled, name)

        def recorded(*args: object, _real: Callable[..., object] = real, _name: str = name) -> object:
            used.add(_name)
            return _real(*args)

        monkeypatch.setattr(compiled, name, recorded)
    try:
        assert kernel.warm_up() == kernel.COMPILED
    finally:
        kernel.use_numpy()
    assert used == {"token_hashes", "token_count", "simhash"}
