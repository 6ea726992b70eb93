"""Pure learning rules: which candidate wins, and how a template's stable window adapts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

RANDOM_BITS = 32  # expected distance of unrelated fingerprints: a window the template lacks counts this much
NEAR_FACTOR = 3  # "near" at a larger window: within 3 k(W) (slot fills), not a sibling
# SimHash distance is ~64/pi * acos(s) for a share s of common shingles: unrelated text ~32 bits,
# half the window in common ~21, slot fills (s ~ 0.8) ~13.
YOUNG_BRANCHES = 3  # single-prompt templates diverging after one head before it becomes an open tail
DIVERGENCE_SLACK_BITS = 10  # below the distance expected when two prompts share no more than the head's window
CLOSE_FACTOR = 1.5  # "close" at a larger window: within 1.5 k(W), for a query shorter than the template's prompts
SPREAD_EVIDENCE = 2  # observations compared with a template at a window before their usual distance there counts
STRAY_SIGMAS = 3  # a query this many standard deviations beyond a template's usual distance at a window strays


@dataclass(frozen=True)
class Candidate:
    """A template fingerprint within k(W) of the query at window ``window``."""

    template_id: int
    window: int
    distance: int
    observations: int
    stable_window: int
    shortest_window: int = 1  # largest window of the shortest prompt folded into the template
    beyond: int = 0  # sum of distances at the query's windows above ``window`` (32 where the template has none)
    unseen: int = 0  # the query's windows above ``window`` the template has no fingerprint for
    near_above: bool | None = None  # near at the larger windows both have (see _near_above; None: no such window)
    stable_distance: int | None = None  # distance at the template's stable window (None: query shorter)
    close_above: bool = False  # close at every window of the query above ``window`` (see _close_above)
    open_tail: bool = False  # the template is a fixed head (up to its stable window) followed by varying text
    distances_above: tuple[tuple[int, int], ...] = ()  # (window, distance) above ``window`` both have, ascending
    above: tuple[tuple[int, int], ...] = ()  # the template's (window, fingerprint) above ``window``
    repeats_above: bool = False  # the template's text repeats at a window above ``window`` (``repeats``)
    strays: bool = False  # beyond the template's usual distance at a window above ``window`` (``strays``)

    def consistent(self, query_largest_window: int) -> bool:
        """Not ``strays``, and: the whole head of an open-tail template, whatever follows it. Else: not
        shorter than every prompt of the template (unless ``close_above``) nor longer by more than one
        window, and still near it above the match window (``near_above``): else a different template
        sharing the prefix."""
        if self.strays:
            return False
        if self.open_tail and self.window >= self.stable_window:
            return True
        long_enough = query_largest_window >= self.shortest_window or self.close_above
        return long_enough and self.unseen <= 1 and self.near_above is not False

    def covers(self, query_largest_window: int) -> bool:
        """A real match: consistent, and ``covers`` by window."""
        return self.consistent(query_largest_window) and covers(self.window, self.stable_window, query_largest_window)

    def near(self, near_bits: int, query_largest_window: int) -> bool:
        """Within ``near_bits`` at the stable window, and neither shorter nor longer than the
        template's prompts: slot fills rather than a different continuation."""
        return (
            self.unseen == 0
            and query_largest_window >= self.shortest_window
            and self.stable_distance is not None
            and self.stable_distance <= near_bits
        )


@dataclass(frozen=True)
class StoredCandidate:
    """A template returned by the lookup: its row and all its window fingerprints (unsigned)."""

    template_id: int
    observations: int
    stable_window: int
    shortest_window: int
    fingerprints: dict[int, int]
    open_tail: bool = False
    # mean distance of the observations folded at a window to the template's fingerprint there (windows
    # with at least SPREAD_EVIDENCE of them): small where its text repeats, about that of unrelated text
    # where it varies
    usual: dict[int, float] = field(default_factory=dict)


def repeats(usual: float, k: int) -> bool:
    """A template's text at a window repeats from one prompt to the next: its prompts were usually within
    3 k(W) of it there (slot fills), where the continuations of an open tail differ like unrelated text."""
    return usual <= NEAR_FACTOR * k


def strays(distance: int, usual: float, k: int) -> bool:
    """A query's distance at a window is not one of the template's prompts': beyond k(W) and beyond their
    usual distance by STRAY_SIGMAS standard deviations of a 64-bit SimHash distance at that mean
    (binomial: sqrt(64 p (1 - p)), p = usual / 64). A slot template's prompts repeat past its head, a
    different template sharing the head does not; where the template's own text varies, nothing strays."""
    p = usual / 64
    return distance > max(k, usual + STRAY_SIGMAS * math.sqrt(64 * p * (1 - p)))


def best_candidate(
    windows: tuple[int, ...],
    fingerprints: tuple[int, ...],
    thresholds: tuple[int, ...],
    templates: Iterable[StoredCandidate],
) -> Candidate | None:
    """The lookup's answer among ``templates`` for a query (windows ascending, unsigned fingerprints)."""
    ranked = rank(windows, fingerprints, thresholds, templates)
    return ranked[0] if ranked else None


def rank(
    windows: tuple[int, ...],
    fingerprints: tuple[int, ...],
    thresholds: tuple[int, ...],
    templates: Iterable[StoredCandidate],
) -> list[Candidate]:
    """The templates within k(W) of the query at some window, each at its own match window (the largest
    where it is), best first.

    Order: covering first, then reaching the template's stable window, closeness beyond the window
    (``beyond``: a match at a smaller window has more windows beyond it), distance, more observations,
    lower id.
    """
    query = dict(zip(windows, fingerprints))
    k = dict(zip(windows, thresholds))
    ranked: list[tuple[tuple[bool, bool, int, int, int, int], Candidate]] = []
    for t in templates:
        d = {w: (fp ^ query[w]).bit_count() for w, fp in t.fingerprints.items() if w in query}
        top = max((w for w, bits in d.items() if bits <= k[w]), default=None)
        if top is None:
            continue
        above = [w for w in windows if w > top]
        unseen = sum(w not in d for w in above)
        seen_above = [w for w in above if w in d]
        candidate = Candidate(
            t.template_id,
            top,
            d[top],
            t.observations,
            t.stable_window,
            t.shortest_window,
            beyond=sum(d[w] for w in seen_above) + RANDOM_BITS * unseen,
            unseen=unseen,
            near_above=_near_above(d, k, seen_above, unseen),
            stable_distance=d.get(t.stable_window),
            close_above=_close_above(d, k, above),
            open_tail=t.open_tail,
            distances_above=tuple((w, d[w]) for w in seen_above),
            above=tuple((w, fp) for w, fp in sorted(t.fingerprints.items()) if w > top),
            repeats_above=any(w > top and repeats(mean, k[w]) for w, mean in t.usual.items() if w in k),
            strays=any(w in t.usual and strays(d[w], t.usual[w], k[w]) for w in seen_above),
        )
        order = (
            not candidate.covers(windows[-1]),
            top < t.stable_window,
            candidate.beyond,
            candidate.distance,
            -candidate.observations,
            candidate.template_id,
        )
        ranked.append((order, candidate))
    return [c for _, c in sorted(ranked, key=lambda pair: pair[0])]


def young_branches(ranked: list[Candidate]) -> list[Candidate]:
    """Candidates made of a single prompt (not open tails): branches nothing has confirmed yet."""
    return [c for c in ranked if c.observations == 1 and not c.open_tail]


def foldable(candidate: Candidate, near_bits: int, query_largest_window: int) -> bool:
    """The query may fold into the candidate: consistent with it, and covering it or near at its stable window."""
    return candidate.consistent(query_largest_window) and (
        candidate.covers(query_largest_window) or candidate.near(near_bits, query_largest_window)
    )


def head_branches(ranked: list[Candidate], threshold: Callable[[int], int]) -> list[Candidate]:
    """The templates that may be branches of one head ending at the top window (the largest match window):
    single prompts, and templates whose prompts all agree up to that window (stable window at most it) and
    vary after it (no window above it ``repeats``), not open tails. Oldest first, each kept only when
    diverged right after the head from the query and from every branch kept before it (``diverged_after``):
    of a pair a bit closer than that, one is left out."""
    if not ranked:
        return []
    top = max(c.window for c in ranked)
    kept: list[Candidate] = []
    for c in sorted(ranked, key=lambda c: c.template_id):
        if c.open_tail or c.window != top or (c.observations > 1 and c.stable_window > top):
            continue
        if c.repeats_above:  # text past the head repeats: a sibling
            continue
        if diverged_after(list(c.distances_above), threshold) and all(
            diverged_after(_distances_above(c, b), threshold) for b in kept
        ):
            kept.append(c)
    return kept


def diverged_head(
    ranked: list[Candidate], near_bits: int, query_largest_window: int, threshold: Callable[[int], int]
) -> tuple[Candidate, list[Candidate]] | None:
    """The template to become the open tail of a head that prompts share and differ right after, with the
    branches it absorbs, or None.

    None of the candidates takes the query (``foldable``) and at least YOUNG_BRANCHES branches of the head
    (``head_branches``) and the query are, pairwise, diverged right after it. Text past that head varies (a
    request, retrieved documents, a chat history), so the head is one template with an open tail: the
    branch with the most observations, else the oldest. Templates whose prompts repeated past the head (a
    stable window above it) are siblings, left alone."""
    if any(foldable(c, near_bits, query_largest_window) for c in ranked):
        return None
    branches = head_branches(ranked, threshold)
    if len(branches) < YOUNG_BRANCHES:
        return None
    return min(branches, key=lambda c: (-c.observations, c.template_id)), branches


def diverged_after(distances: list[tuple[int, int]], threshold: Callable[[int], int]) -> bool:
    """Two prompts agreeing up to a window and sharing nothing past the next one (``distances``: (window,
    distance) above the match window, ascending): beyond k at the next window, and at every larger window
    W at least as far as prompts sharing the next window's text only would be (~64/pi * acos(next / W)),
    less DIVERGENCE_SLACK_BITS. Prompts with a slot past the head and fixed text after it are closer there."""
    if not distances:
        return True
    first, bits = distances[0]
    if bits <= threshold(first):
        return False
    return all(d >= 64 / math.pi * math.acos(first / w) - DIVERGENCE_SLACK_BITS for w, d in distances[1:])


def _distances_above(a: Candidate, b: Candidate) -> list[tuple[int, int]]:
    """(window, distance) of two templates above the match window both have, ascending by window."""
    b_above = dict(b.above)
    return [(w, (fp ^ b_above[w]).bit_count()) for w, fp in a.above if w in b_above]


def _near_above(distances: dict[int, int], k: dict[int, int], seen_above: list[int], unseen: int) -> bool | None:
    """Within 3 k(W) at the next larger window both have; at every one of them when the query is longer
    than the template's prompts (``unseen``): such a query is a longer sibling sharing the prefix unless
    it agrees wherever both have text."""
    if not seen_above:
        return None
    return all(distances[w] <= NEAR_FACTOR * k[w] for w in (seen_above if unseen else seen_above[:1]))


def _close_above(distances: dict[int, int], k: dict[int, int], above: list[int]) -> bool:
    """Within 1.5 k(W) at every window of the query above the match window, all of which the template has:
    a query shorter than the template's prompts (a shorter variable tail) that agrees with them wherever it
    has text. A shorter sibling ending at the shared prefix has no such window, and one going on differs there."""
    return bool(above) and all(w in distances and distances[w] <= CLOSE_FACTOR * k[w] for w in above)


def covers(window: int, stable_window: int, query_largest_window: int) -> bool:
    """A match at ``window`` reaches ``stable_window``, or is the whole query and that is at most one window shorter."""
    return window >= stable_window or (window == query_largest_window and 2 * window >= stable_window)


@dataclass(frozen=True)
class WindowState:
    """The adaptive part of a template row (read under a row lock)."""

    stable_window: int
    shrink_streak: int = 0
    grow_streak: int = 0
    grow_window: int = 0


@dataclass(frozen=True)
class FoldDecision:
    fold: bool  # fold the observation into the template (else: create a new template)
    state: WindowState  # the template's window state after this observation
    change: str | None = None  # "grow" / "shrink" when the stable window moved


def decide(
    state: WindowState,
    matched_window: int,
    query_largest_window: int,
    grow_after: int,
    shrink_after: int,
    near: bool = True,
    grows: bool = True,
) -> FoldDecision:
    """Fold or not, and the new window state, for an observation that matched at ``matched_window``.

    Partial match (below the stable window, query longer): if the query is still ``near``
    the template at its stable window (slot fills: a few more bits than k; an unrelated
    continuation differs in ~32), it is shrink evidence, and after ``shrink_after``
    consecutive ones the stable window shrinks to the matched window and the observation
    folds in. Otherwise, or before that, a new template is created (a sibling that shares
    only a prefix). A match above the stable window, ``grow_after`` times in a row, grows
    it to the smallest of those windows (unless ``grows`` is off: an open tail's text past its head varies,
    and later turns of one chat repeat their own history there).
    """
    covering = covers(matched_window, state.stable_window, query_largest_window)
    if not covering and not near:
        return FoldDecision(False, state)
    if not covering:
        streak = state.shrink_streak + 1
        if streak < shrink_after:
            return FoldDecision(False, WindowState(state.stable_window, shrink_streak=streak))
        return FoldDecision(True, WindowState(matched_window), "shrink")
    if matched_window > state.stable_window and grows:
        streak = state.grow_streak + 1
        target = min(state.grow_window or matched_window, matched_window)
        if streak >= grow_after:
            return FoldDecision(True, WindowState(target), "grow")
        return FoldDecision(True, replace(state, shrink_streak=0, grow_streak=streak, grow_window=target))
    return FoldDecision(True, WindowState(state.stable_window))
