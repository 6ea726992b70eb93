"""A long text's start and a count of the rest give Match the same answer as the whole text, and the plugin
sends only that start."""

from __future__ import annotations

import random

from ollama_optimizer.gen.optimizer.v1 import matcher_pb2 as pb
from prompt_fingerprint import chat_head_end, match_key
from proxy_plugin.canonical import canonical_text
from proxy_plugin.core import OptimizerCore

from matcher_fixtures import prompt
from plugin_fixtures import StandInMatcher, plugin_config, stand_ins

NON_ASCII = "Größe — мир, 東京. "


def _long_texts() -> list[tuple[str, bool]]:
    """(text, whether its start suffices)."""
    rng = random.Random(5)
    system = "system: " + prompt(1, 400) + "\n"
    return [
        (prompt(2, 60_000), True),  # plain ASCII
        (NON_ASCII * 20_000, True),  # plain, non-ASCII
        (
            canonical_text(
                {
                    "messages": [
                        {"role": "system", "content": prompt(3, 300)},
                        {"role": "user", "content": NON_ASCII * 15_000},
                    ]
                }
            ),
            True,
        ),  # long history
        (
            canonical_text(
                {
                    "messages": [
                        {"role": "system", "content": prompt(4, 30_000)},
                        {"role": "user", "content": "hi " * 20_000},
                    ]
                }
            ),
            True,
        ),  # a long head
        (system + "user: " + "x" * 200_000 + " " + prompt(5, 2000), False),  # a cut would split the turn marker
        (" ".join(prompt(rng.randrange(100), 5) for _ in range(20_000)), True),
    ]


async def test_the_start_and_a_count_match_as_the_whole_text(matcher_stub) -> None:
    for text, cut in _long_texts():
        key = match_key(text)
        assert (key.read_end < len(text) and key.units_after > 0) is cut
        assert key.read_end >= chat_head_end(text)  # a chat's head goes whole
        whole = await matcher_stub.Match(pb.MatchRequest(model="m", text=text))
        start = await matcher_stub.Match(
            pb.MatchRequest(model="m", text=text[: key.read_end], units_after_text=key.units_after)
        )
        assert start.fingerprints == whole.fingerprints
        assert start.prompt_units == whole.prompt_units == key.unit_count


async def test_the_plugin_sends_only_the_start_of_a_long_prompt(monkeypatch) -> None:
    sent: list[pb.MatchRequest] = []
    answer = StandInMatcher.Match

    async def recording(self, request, context):
        sent.append(request)
        return await answer(self, request, context)

    monkeypatch.setattr(StandInMatcher, "Match", recording)
    chat = {"model": "m", "messages": [{"role": "user", "content": NON_ASCII * 15_000}]}
    async with stand_ins() as services:
        core = OptimizerCore(plugin_config(services.matcher_address, services.tuner_address))
        await core.prepare(chat)
        await core.close()
    text = canonical_text(chat)
    key = match_key(text)
    [request] = sent
    assert request.text == text[: key.read_end] and len(request.text) < len(text) // 10
    assert request.units_after_text == key.units_after
