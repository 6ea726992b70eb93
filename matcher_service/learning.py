"""Pure learning rules: which candidate wins, and how a template's stable window adapts."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Candidate:
    """A template fingerprint within k(W) of the query at window ``window``."""

    template_id: int
    window: int
    distance: int
    observations: int
    stable_window: int

    def covers(self, query_largest_window: int) -> bool:
        """A real match: it reaches the template's stable window, or the whole (shorter) query."""
        return self.window >= self.stable_window or self.window == query_largest_window


@dataclass(frozen=True)
class WindowState:
    """The adaptive part of a template row (read under a row lock)."""

    stable_window: int
    shrink_streak: int = 0
    grow_streak: int = 0
    grow_window: int = 0


@dataclass(frozen=True)
class Decision:
    fold: bool  # fold the observation into the template (else: create a new template)
    state: WindowState  # the template's window state after this observation
    change: str | None = None  # "grow" / "shrink" when the stable window moved


def decide(state: WindowState, matched_window: int, query_largest_window: int,
           grow_after: int, shrink_after: int) -> Decision:
    """Fold or not, and the new window state, for an observation that matched at ``matched_window``.

    Partial match (below the stable window, query longer): shrink evidence; after
    ``shrink_after`` consecutive ones the stable window shrinks to the matched window and
    the observation folds in; before that a new template is created (it may be a sibling
    that shares only a prefix). A match above the stable window, ``grow_after`` times in
    a row, grows it to the smallest of those windows.
    """
    covering = matched_window >= state.stable_window or matched_window == query_largest_window
    if not covering:
        streak = state.shrink_streak + 1
        if streak < shrink_after:
            return Decision(False, WindowState(state.stable_window, shrink_streak=streak))
        return Decision(True, WindowState(matched_window), "shrink")
    if matched_window > state.stable_window:
        streak = state.grow_streak + 1
        target = min(state.grow_window or matched_window, matched_window)
        if streak >= grow_after:
            return Decision(True, WindowState(target), "grow")
        return Decision(True, replace(state, shrink_streak=0, grow_streak=streak, grow_window=target))
    return Decision(True, WindowState(state.stable_window))
