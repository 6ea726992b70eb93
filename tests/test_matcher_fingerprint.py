"""Unit tests: tokenizer, SimHash windows, block probes (exactness), learning rules, cache, settings."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prompt_fingerprint.fingerprints as fingerprints_module
from matcher_service.blocks import BLOCKS, block_values, build_probes, probe_key, to_signed, to_unsigned
from matcher_service.learning import (
    StoredCandidate,
    WindowState,
    best_candidate,
    decide,
    diverged_after,
    repeats,
    strays,
)
from matcher_service.settings import MatcherSettings, parse_thresholds
from ollama_optimizer.settings_env import ConfigError, load
from ollama_optimizer.soft_cache import SoftCache
from prompt_fingerprint import algorithm_version, fingerprint, match_key, windows_for
from prompt_fingerprint.tokens import TOKEN_RE, _hash_all, hash_tokens

from matcher_fixtures import prompt


def _regex_path_hashes(text: str, normalize: bool) -> np.ndarray:
    """The reference: the regex tokens, forced through the non-ASCII (joined) path."""
    tokens = TOKEN_RE.findall(text.lower())
    return hash_tokens(" ".join(tokens) + " \u00e9", len(tokens), normalize)[0][: len(tokens)]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=300), st.booleans())
def test_ascii_fast_path_equals_regex(text: str, normalize: bool) -> None:
    hashes, count = hash_tokens(text, 10_000, normalize)
    assert count == len(TOKEN_RE.findall(text.lower()))
    if count:
        assert np.array_equal(hashes, _regex_path_hashes(text, normalize))


def test_unit_count_counts_the_whole_text_and_non_ascii() -> None:
    text = "Grüße, Welt! naïve café — 東京 " * 300
    assert hash_tokens(text, 1024, True)[1] == len(TOKEN_RE.findall(text.lower()))
    assert fingerprint(text, 4, True).unit_count == len(TOKEN_RE.findall(text.lower()))


def test_normalisation_hides_volatile_literals_only_when_enabled() -> None:
    a = "order 12345 id 9f8e7d6c uuid 550e8400-e29b-41d4-a716-446655440000 on 2024-01-05 " + prompt(1, 80)
    b = "order 99 id 00aa11bb uuid 123e4567-e89b-12d3-a456-426614174000 on 2025-12-31 " + prompt(1, 80)
    assert fingerprint(a, 4, True).fingerprints == fingerprint(b, 4, True).fingerprints
    assert fingerprint(a, 4, False).fingerprints != fingerprint(b, 4, False).fingerprints
    assert hash_tokens("cafe", 9, True)[0][0] != hash_tokens("c0fe", 9, True)[0][0]  # no digit: kept


def test_windows_and_short_prompts() -> None:
    assert windows_for(15) == [15]
    assert windows_for(16) == [16]
    assert windows_for(63) == [16, 32]
    assert windows_for(5000) == [16, 32, 64, 128, 256, 512, 1024]
    short = fingerprint("hi there", 4, True)
    assert short.windows == (2,) and short.unit_count == 2
    long = fingerprint(prompt(2, 700), 4, True)
    assert long.windows == (16, 32, 64, 128, 256, 512) and long.version == algorithm_version(4, True)


def test_a_chat_is_fingerprinted_on_its_system_head() -> None:
    system = "system: " + prompt(7, 40) + "\n"
    a = fingerprint(system + "user: " + prompt(8, 300) + "\n", 4, True)
    b = fingerprint(system + "user: " + prompt(9, 20) + "\nassistant: " + prompt(10, 90) + "\n", 4, True)
    assert a.fingerprints == b.fingerprints and a.windows == (16, 32) and a.windows == b.windows
    assert a.head_units == b.head_units == 42 and a.unit_count == 42 + 2 + 300 and b.unit_count == 42 + 4 + 110
    plain = fingerprint("system: " + prompt(7, 40), 4, True)  # no other message: the text's own prefixes
    assert plain.head_units == 0 and plain.windows == (16, 32)
    assert match_key(system + "user: x\n")[0] == match_key(system + "user: " + prompt(8, 900) + "\n")[0]


def test_prefix_windows_do_not_depend_on_the_tail() -> None:
    head = prompt(3, 512)
    a, b = fingerprint(head + " " + prompt(4, 600), 4, True), fingerprint(head + " " + prompt(5, 600), 4, True)
    assert a.fingerprints[:6] == b.fingerprints[:6]
    assert a.fingerprints[6] != b.fingerprints[6]


def test_one_replaced_token_flips_few_bits_at_1024() -> None:
    words = prompt(6, 1100).split()
    base = fingerprint(" ".join(words), 4, True).fingerprints[-1]
    words[500] = "replaced"
    changed = fingerprint(" ".join(words), 4, True).fingerprints[-1]
    assert bin(base ^ changed).count("1") <= 7


def test_repeated_boilerplate_does_not_outweigh_the_text_that_differs() -> None:
    """Tool schemas of two agents: the same JSON structure repeated, different names and descriptions."""

    def schema(seed: int) -> str:
        words = prompt(seed, 60).split()
        return " ".join(
            f'{{"type": "function", "function": {{"name": "{words[i]}", "parameters": '
            f'{{"type": "object", "properties": {{}}}}}}}}'
            for i in range(60)
        )

    a, b = fingerprint(schema(20), 4, True), fingerprint(schema(21), 4, True)
    assert a.windows[-1] == 1024 and bin(a.fingerprints[-1] ^ b.fingerprints[-1]).count("1") > 16


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 64) - 1), st.integers(0, 11), st.data())
def test_probes_find_every_fingerprint_within_k(query: int, k: int, data: st.DataObject) -> None:
    flips = data.draw(st.sets(st.integers(0, 63), max_size=k))
    stored = query ^ sum(1 << b for b in flips)
    (keys,) = build_probes((1024,), (query,), [k]).per_window
    stored_keys = [probe_key(1024, v) for v in block_values(stored)]
    assert any(stored_keys[i] in keys[i] for i in range(BLOCKS))
    assert to_unsigned(to_signed(query)) == query


def test_probe_counts() -> None:
    assert build_probes((64,), (1,), [3]).count == 4
    assert build_probes((64,), (1,), [7]).count == 4 * 17
    # Generalised pigeonhole: sum(r_i + 1) = k + 1, so k = 4..6 probe 1-bit variants of only k - 3 blocks.
    assert [build_probes((64,), (1,), [k]).count for k in (0, 4, 5, 6)] == [1, 17 + 3, 2 * 17 + 2, 3 * 17 + 1]
    assert build_probes((64, 1024), (1, 2), [11, 3]).count == 4 * 137 + 4


def test_learning_shrinks_after_near_partials_and_grows_after_n() -> None:
    state = WindowState(1024)
    first = decide(state, 256, 1024, grow_after=20, shrink_after=2)
    assert not first.fold and first.state.shrink_streak == 1
    second = decide(first.state, 256, 1024, grow_after=20, shrink_after=2)
    assert second.fold and second.change == "shrink" and second.state.stable_window == 256
    far = decide(first.state, 256, 1024, grow_after=20, shrink_after=1, near=False)
    assert not far.fold and far.state == first.state  # a different continuation: a sibling, no evidence
    assert decide(WindowState(512), 256, 256, 20, 2).fold  # the whole query, one window shorter
    assert not decide(WindowState(1024), 256, 256, 20, 2).fold  # much shorter: partial
    state = WindowState(128)
    for _ in range(19):
        step = decide(state, 1024 if random.random() < 0.5 else 512, 1024, 20, 2)
        assert step.fold and step.change is None
        state = step.state
    grown = decide(state, 1024, 1024, 20, 2)
    assert grown.change == "grow" and grown.state.stable_window in (512, 1024)
    assert decide(WindowState(128, grow_streak=5, grow_window=512), 128, 1024, 20, 2).state.grow_streak == 0


def test_best_candidate_prefers_a_covering_template_over_a_closer_sibling() -> None:
    """Query of 512 tokens matching two templates at 256: one diverges at 512 (a sibling sharing the
    prefix, next window not near), one has no 512 window. The covering one answers although the
    sibling is closer beyond the window; an empty candidate set answers None."""
    windows, ks = (64, 128, 256, 512), (3, 4, 5, 6)
    query = (1, 2, 3, 0)
    sibling = StoredCandidate(59, 2, 256, 512, {64: 1, 128: 2, 256: 3, 512: (1 << 20) - 1})  # 20 bits off
    covering = StoredCandidate(121, 1, 256, 256, {64: 1, 128: 2, 256: 3})
    best = best_candidate(windows, query, ks, [sibling, covering])
    assert best is not None and best.template_id == 121 and best.window == 256 and best.covers(512)
    assert (best.unseen, best.beyond, best.near_above) == (1, 32, None)
    alone = best_candidate(windows, query, ks, [sibling])
    assert alone is not None and alone.near_above is False and not alone.covers(512)
    assert best_candidate(windows, query, ks, []) is None


def test_a_longer_query_must_be_near_at_every_larger_window_the_template_has() -> None:
    """A template stable at 64 whose prompts reach 256 (slot fills at 128); a query matching it at 64,
    near at 128 but 20 bits off at 256. No longer than the template's prompts: only the next window
    counts (a variable tail may spoil 256), so it covers. Longer (a 512 window the template lacks): a
    sibling sharing the prefix, unless it is also near at 256."""
    template = StoredCandidate(7, 10, 64, 256, {64: 0, 128: 0, 256: 0})
    far_at_256 = (1 << 20) - 1
    same_length = best_candidate((64, 128, 256), (0, 0b11111, far_at_256), (3, 4, 5), [template])
    assert same_length is not None and same_length.window == 64 and same_length.near_above is True
    assert same_length.covers(256)
    longer = best_candidate((64, 128, 256, 512), (0, 0b11111, far_at_256, 1), (3, 4, 5, 6), [template])
    assert longer is not None and longer.unseen == 1 and longer.near_above is False
    assert not longer.consistent(512) and not longer.covers(512)
    near = best_candidate((64, 128, 256, 512), (0, 0b11111, 0xFF, 1), (3, 4, 5, 6), [template])
    assert near is not None and near.near_above is True and near.covers(512)


def test_a_shorter_query_must_be_close_at_every_larger_window_it_has() -> None:
    """A template stable at 128 whose prompts all reached 512 (a variable tail); a query of 256 tokens
    matching it at 128. Within 1.5 k(256) at 256 (7 bits): a shorter tail, consistent and covering.
    9 bits off at 256 (near, not close): still a possible sibling, so not consistent; nor is a query
    ending at the match window (no larger window to tell a shorter sibling sharing the prefix apart)."""
    template = StoredCandidate(7, 10, 128, 512, {64: 0, 128: 0, 256: 0, 512: 0})
    ks = (3, 4, 5)
    close = best_candidate((64, 128, 256), (0, 0, 0b1111111), ks, [template])
    assert close is not None and close.window == 128 and close.close_above and close.covers(256)
    near = best_candidate((64, 128, 256), (0, 0, 0b111111111), ks, [template])
    assert near is not None and near.near_above is True and not near.close_above and not near.consistent(256)
    prefix = best_candidate((64, 128), (0, 0), ks[:2], [template])
    assert prefix is not None and prefix.window == 128 and not prefix.close_above and not prefix.consistent(128)


def test_diverged_after_needs_nothing_shared_past_the_next_window() -> None:
    k = MatcherSettings().threshold
    assert diverged_after([(128, 20), (256, 25), (512, 29)], k)  # a head, then different text
    assert diverged_after([(64, 7), (128, 22)], k)  # a head filling most of 64, then different text
    assert not diverged_after([(128, 4), (256, 25)], k)  # agree at 128: they share more than the head
    assert not diverged_after([(128, 10), (256, 6)], k)  # a slot fill past the head, fixed text after it
    assert diverged_after([], k)


def test_soft_cache_ttl_and_bound() -> None:
    now = [0.0]
    cache: SoftCache[int] = SoftCache(size=2, ttl=1.0, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)
    cache.put("c", 3)  # evicts the least recently used: b
    assert cache.get("b") == (False, None) and len(cache) == 2
    now[0] = 2.0
    assert cache.get("a") == (False, None)


def test_settings_validation() -> None:
    assert parse_thresholds("64:3,128:4,256:5,512:6,1024:7")[1024] == 7
    assert parse_thresholds("64:3,128:4,256:5,512:6,1024:7")[16] == 2  # small windows keep their defaults
    for bad in ("64:3", "64:x,128:4,256:5,512:6,1024:7", "64:12,128:4,256:5,512:6,1024:7", "65:1"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)
    with pytest.raises(ConfigError, match="MATCHER_GROW_AFTER"):
        load(MatcherSettings, {"MATCHER_GROW_AFTER": "5"})
    with pytest.raises(ConfigError, match="MATCHER_GROW_AFTER"):
        MatcherSettings(grow_after=5)
    with pytest.raises(ConfigError, match="MATCHER_THRESHOLDS: window 65"):
        load(MatcherSettings, {"MATCHER_THRESHOLDS": "65:1"})
    settings = load(MatcherSettings, {"MATCHER_GROW_AFTER": "25", "MATCHER_SHINGLE_SIZE": "3"})
    assert settings.shingle_size == 3 and settings.grow_after == 25 and settings.threshold(10) == 2


def test_a_long_text_is_tokenised_only_as_far_as_the_windows_need() -> None:
    ascii_text = prompt(11, 30_000)
    hashes, count = hash_tokens(ascii_text, 1024, True)
    exact, exact_count = _hash_all(ascii_text, 1024, True)
    assert count == exact_count == 30_000 and np.array_equal(hashes, exact)  # ASCII: exact
    other = "Grüße, мир! Ça va — 東京 «test». " * 3000
    hashes, count = hash_tokens(other, 1024, True)
    exact, exact_count = _hash_all(other, 1024, True)
    assert np.array_equal(hashes, exact) and len(hashes) == 1024
    assert abs(count - exact_count) <= exact_count // 5  # beyond the prefix: non-ASCII marks join words


async def test_large_texts_are_fingerprinted_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    original = fingerprints_module.fingerprint

    def recording(*args):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(fingerprints_module, "fingerprint", recording)
    small = await fingerprints_module.fingerprint_off_loop(prompt(12, 100), 4, True)
    large = await fingerprints_module.fingerprint_off_loop("é " * fingerprints_module.OFF_LOOP_CHARS, 4, True)
    assert small.unit_count == 100 and large.unit_count == fingerprints_module.OFF_LOOP_CHARS
    assert threads[0] == threading.current_thread().name and threads[1] != threads[0]


def test_a_query_strays_beyond_a_templates_usual_distance_where_its_text_repeats() -> None:
    # prompts usually 8 bits from the template at this window (slot fills): 20 bits is another template
    assert strays(20, 8.0, 4) and not strays(12, 8.0, 4)
    assert not strays(32, 21.0, 4)  # text that varies like unrelated continuations: nothing strays
    assert strays(5, 0.0, 4) and not strays(4, 0.0, 4)  # text that repeats exactly: anything beyond k
    assert repeats(8.0, 4) and not repeats(21.0, 4)
