"""The plugin's Match memo: its key is exactly Match's input, and a hit answers what Match would have."""

from __future__ import annotations

import random

import pytest
from prometheus_client import REGISTRY

from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc
from prompt_fingerprint import ALGORITHM_REVISION, algorithm_version, fingerprint, match_key
from proxy_plugin.canonical import canonical_text
from proxy_plugin.core import OptimizerCore
from proxy_plugin.match_memo import MatchMemo

from matcher_fixtures import prompt
from plugin_fixtures import plugin_config

MODEL = "llama3.1:8b"
HEAD = prompt(1, 1100)  # a fixed head longer than the largest window (1,024 tokens)
SHORT_HEAD = prompt(2, 600)  # windows up to 512 while the whole prompt stays under 1,024 tokens


def _same_match_input(a: str, b: str, shingle_size: int, normalize: bool) -> bool:
    fa, fb = fingerprint(a, shingle_size, normalize), fingerprint(b, shingle_size, normalize)
    return (fa.windows, fa.fingerprints) == (fb.windows, fb.fingerprints)


@pytest.mark.parametrize(("shingle_size", "normalize"), [(3, False), (4, True), (5, True)])
def test_equal_keys_mean_equal_fingerprints_whatever_the_matcher_settings(shingle_size: int, normalize: bool) -> None:
    rng = random.Random(shingle_size)
    cases = [
        (HEAD + " " + prompt(10, 50), HEAD + " " + prompt(11, 400)),
        (SHORT_HEAD + " " + prompt(12, 20), SHORT_HEAD + " " + prompt(13, 300)),
        ("Ünïcode Ü " + SHORT_HEAD, "üNÏCODE ü " + SHORT_HEAD + " tail"),
    ]
    for _ in range(40):  # shared heads of every size, tails of every size
        head = prompt(rng.randrange(1000), rng.randrange(1, 1300))
        cases.append(
            (
                head + " " + prompt(rng.randrange(1000), rng.randrange(1, 300)),
                head + " " + prompt(rng.randrange(1000), rng.randrange(1, 300)),
            )
        )
    equal = 0
    for a, b in cases:
        (ka, units_a, *_), (kb, *_) = match_key(a), match_key(b)
        assert units_a == fingerprint(a, shingle_size, normalize).unit_count
        if ka == kb:
            equal += 1
            assert _same_match_input(a, b, shingle_size, normalize)
    assert equal >= 3  # the hand-made cases at least


def test_key_changes_with_anything_match_reads() -> None:
    base = match_key(SHORT_HEAD + " " + prompt(20, 20)).key
    assert match_key(SHORT_HEAD + " " + prompt(21, 500))[0] != base  # crosses 1,024: a new window
    words = SHORT_HEAD.split()
    words[300] = "changed"
    assert match_key(" ".join(words) + " " + prompt(20, 20))[0] != base  # inside the largest window
    assert match_key("hello world")[0] != match_key("hello world again")[0]  # under 64 tokens: all of it


async def test_memo_keeps_matched_answers_for_its_lifetime_only() -> None:
    now = [0.0]
    memo = MatchMemo(size=10, ttl_s=2.0, clock=lambda: now[0])
    text, other = HEAD + " one", HEAD + " two three"
    key, answer = await memo.recall(text)
    assert answer is None
    fps = matcher_pb2.Fingerprints(
        algorithm_version=algorithm_version(4, True),
        unit_count=1101,
        windows=[matcher_pb2.WindowFingerprint(window=64, fingerprint=5)],
    )
    memo.remember(key.key, matcher_pb2.MatchResponse(matched=False, prompt_units=1101, fingerprints=fps))
    assert (await memo.recall(text))[1] is None  # a miss is never kept: Observe is about to create the template
    memo.remember(key.key, matcher_pb2.MatchResponse(matched=True, template_id=9, prompt_units=1101, fingerprints=fps))
    _key, answer = await memo.recall(other)
    assert answer is not None and answer.template_id == 9
    assert answer.prompt_units == answer.fingerprints.unit_count == match_key(other)[1] == 1102
    assert fps.unit_count == 1101  # the kept message is copied, never changed
    now[0] = 2.5
    assert (await memo.recall(other))[1] is None


async def test_an_answer_of_another_algorithm_revision_is_not_kept() -> None:
    """A matcher fingerprinting with another revision may tell apart texts this key confuses."""
    memo = MatchMemo(size=10, ttl_s=2.0)
    key, _answer = await memo.recall(HEAD)
    assert key.key[0] == ALGORITHM_REVISION
    for revision, kept in ((ALGORITHM_REVISION + 1, False), (ALGORITHM_REVISION, True)):
        fps = matcher_pb2.Fingerprints(algorithm_version=revision * 100 + 41, unit_count=1100)
        memo.remember(key.key, matcher_pb2.MatchResponse(matched=True, template_id=9, fingerprints=fps))
        assert ((await memo.recall(HEAD))[1] is not None) == kept


def _match_calls() -> float:
    labels = {"grpc_type": "unary", "grpc_service": "optimizer.v1.Matcher", "grpc_method": "Match"}
    return REGISTRY.get_sample_value("grpc_server_started_total", labels) or 0.0


def _chat(head: str, tail_seed: int) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": head}, {"role": "user", "content": prompt(tail_seed, 40)}],
    }


async def test_repeated_match_input_skips_the_round_trip_with_matchs_answer(matcher, tuner) -> None:
    core = OptimizerCore(plugin_config(matcher.address, tuner.address))
    outcome = {"done": True, "prompt_eval_count": 1200, "eval_count": 10}
    decisions = []
    for seed in range(3):  # unknown, then created by Observe and matched, then from the memo
        calls = _match_calls()
        request = _chat(HEAD, 100 + seed)
        _sent, decision = await core.prepare(request)
        decisions.append((decision, _match_calls() - calls))
        core.observe(request, outcome, decision)
        await core.flush()
    (first, first_calls), (second, second_calls), (third, third_calls) = decisions
    assert first.template_id == 0 and first_calls == 1
    assert second.template_id > 0 and second_calls == 1  # a miss was not remembered
    assert third_calls == 0 and third.template_id == second.template_id

    async with create_channel(matcher.address) as channel:  # what Match answers for the third text
        direct = await matcher_pb2_grpc.MatcherStub(channel).Match(
            matcher_pb2.MatchRequest(model=MODEL, text=canonical_text(_chat(HEAD, 102))), timeout=5
        )
    assert direct.matched and direct.template_id == third.template_id
    assert third.prompt_units == direct.prompt_units and third.fingerprints == direct.fingerprints

    calls = _match_calls()
    sibling = _chat(SHORT_HEAD, 103)  # different tokens inside the largest window: Match is asked
    await core.prepare(sibling)
    assert _match_calls() - calls == 1
    await core.close(0.5)
