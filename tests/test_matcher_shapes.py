"""Prompt shapes of real traffic through a real matcher (gRPC on loopback, real Postgres): heads that end
at any window, followed by text that varies; one test per way such a prompt was once missed."""

from __future__ import annotations

import random

from test_matcher_service import count, fingerprints, observe

HEAD = dict(w16=0x1616_1616_0000_1616, w32=0x3232_0000_3232_3232, w64=0x6464_6464_6464_0000)


def _varied(rng: random.Random, unit_count: int) -> dict[str, int]:
    """Fingerprints of unrelated text at every window above the head's."""
    return {f"w{w}": rng.getrandbits(64) for w in (128, 256, 512, 1024) if w <= unit_count}


async def test_a_template_of_several_prompts_becomes_the_open_tail_of_its_head(matcher_stub, pool) -> None:
    rng = random.Random(21)
    template = await observe(matcher_stub, fingerprints(100, **HEAD))
    assert (await observe(matcher_stub, fingerprints(100, **HEAD))).observations == 2  # prompts ending at the head
    assert (await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200)))).observations == 3
    branches = [await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200))) for _ in range(3)]
    assert all(b.created for b in branches)  # a sibling sharing the head is as likely, until they diverge
    fourth = await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200)))
    assert not fourth.created and fourth.template_id == template.template_id and fourth.stable_window == 64
    assert await count(pool) == 1 and fourth.observations == 7  # the branches were folded into it
    hit = await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200)))
    assert hit.template_id == template.template_id and await count(pool) == 1
