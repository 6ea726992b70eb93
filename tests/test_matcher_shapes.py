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
    branches = [await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200))) for _ in range(2)]
    assert all(b.created for b in branches)  # a sibling sharing the head is as likely, until they diverge
    third = await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200)))
    assert not third.created and third.template_id == template.template_id and third.stable_window == 64
    assert await count(pool) == 1 and third.observations == 6  # the branches were folded into it
    hit = await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200)))
    assert hit.template_id == template.template_id and await count(pool) == 1


def _flip(fp: int, bits: int, shift: int = 0) -> int:
    """``fp`` with ``bits`` bits flipped (from bit ``shift`` up, below bit 64)."""
    assert bits + shift <= 64
    return fp ^ (((1 << bits) - 1) << shift)


async def _open_tail_at_head(matcher_stub, rng: random.Random) -> int:
    """An open-tail template of HEAD (prompts differing right after it); its id."""
    first = await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200)))
    for _ in range(3):
        last = await observe(matcher_stub, fingerprints(200, **HEAD, **_varied(rng, 200)))
    assert not last.created and last.template_id == first.template_id and last.stable_window == 64
    return first.template_id


async def test_an_open_tail_is_found_below_a_larger_window_where_another_template_matches(matcher_stub) -> None:
    rng = random.Random(22)
    tail = await _open_tail_at_head(matcher_stub, rng)
    at_128 = rng.getrandbits(64)
    other = await observe(matcher_stub, fingerprints(300, w64=rng.getrandbits(64), w128=at_128, w256=0))
    assert other.created
    # within k of the other template at 128 (not at 256), the open tail's head up to 64
    query = fingerprints(300, **HEAD, w128=_flip(at_128, 1), w256=rng.getrandbits(64))
    hit = await observe(matcher_stub, query)
    assert not hit.created and hit.template_id == tail


async def test_a_pair_of_close_branches_leaves_one_out_instead_of_blocking_the_open_tail(matcher_stub, pool) -> None:
    rng = random.Random(23)
    first = dict(w128=rng.getrandbits(64), w256=rng.getrandbits(64))
    # 13 bits from the first at 128 (beyond 3 k: not its slot fill), 8 at 256 (closer than continuations that
    # share only the head): the pair is not diverged right after the head
    close = dict(w128=_flip(first["w128"], 13), w256=_flip(first["w256"], 8, 20))
    branches = [
        await observe(matcher_stub, fingerprints(300, **HEAD, **tail))
        for tail in (first, close, _varied(rng, 300), _varied(rng, 300))
    ]
    assert all(b.created for b in branches)
    fifth = await observe(matcher_stub, fingerprints(300, **HEAD, **_varied(rng, 300)))
    assert not fifth.created and fifth.template_id == branches[0].template_id and fifth.stable_window == 64
    assert await count(pool) == 2  # the close branch stays a template of its own


async def _slot_template(matcher_stub, rng: random.Random) -> tuple[int, dict[str, int]]:
    """A template of HEAD, a slot right after it (its prompts 6-8 bits apart at 128 and 256: beyond k, within
    3 k), then fixed text; its id and its fixed fingerprints past the head."""
    fixed = dict(w128=rng.getrandbits(64), w256=rng.getrandbits(64))
    ids = set()
    for bits, shift in ((0, 0), (6, 10), (7, 30), (8, 50)):
        filled = dict(w128=_flip(fixed["w128"], bits, shift), w256=_flip(fixed["w256"], bits, 50 - shift))
        ids.add((await observe(matcher_stub, fingerprints(300, **HEAD, **filled))).template_id)
    assert len(ids) == 1
    return ids.pop(), fixed


async def test_a_prompt_that_varies_where_a_templates_prompts_repeat_is_not_folded_into_it(matcher_stub) -> None:
    rng = random.Random(24)
    template, fixed = await _slot_template(matcher_stub, rng)
    # shares the head and is near at 128 (10 bits), but differs at 256, where the template's text repeats
    other = await observe(matcher_stub, fingerprints(300, **HEAD, w128=_flip(fixed["w128"], 10), w256=0))
    assert other.created and other.template_id != template
    own = await observe(matcher_stub, fingerprints(300, **HEAD, w128=_flip(fixed["w128"], 7), w256=fixed["w256"]))
    assert own.template_id == template and own.observations == 5


async def test_a_template_whose_text_past_the_head_repeats_does_not_become_an_open_tail(matcher_stub) -> None:
    rng = random.Random(25)
    template, _fixed = await _slot_template(matcher_stub, rng)
    varied = [await observe(matcher_stub, fingerprints(300, **HEAD, **_varied(rng, 300))) for _ in range(4)]
    assert all(v.template_id != template for v in varied)  # not merged into the slot template
    assert not varied[-1].created and varied[-1].template_id == varied[0].template_id  # their own open tail
