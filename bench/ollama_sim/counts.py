"""How ``prompt_eval_count`` is reported: one switch per Ollama behaviour (sources in bench/CONSTANTS.md).

- ``full``: the logical prompt total, cached prefix included (PR #16428 restored it; HEAD reference).
- ``uncached``: only newly processed tokens (the 0.30 llama-server runner before PR #16428, issue #16414).
- ``omit-cached``: only newly processed tokens, and the field omitted when none were (before PR #5371,
  issues #2068, #3427, #5370: "returns 0 for prompt eval if the prompt was cached").
- ``split``: the logical total plus ``prompt_eval_cached_count`` (PR #17943).
Each mode answers /api/version with a release that behaves that way.
"""

from __future__ import annotations

COUNT_MODES = {"full": "0.32.15", "uncached": "0.30.0", "omit-cached": "0.1.30", "split": "0.33.3"}


def prompt_counts(mode: str, total: int, cached: int) -> dict[str, int]:
    """The count fields of a final response for a prompt of ``total`` tokens, ``cached`` from the KV cache."""
    cached = min(max(cached, 0), total)
    if mode == "split":
        return {"prompt_eval_count": total, "prompt_eval_cached_count": cached}
    if mode in ("uncached", "omit-cached"):
        fresh = total - cached
        return {"prompt_eval_count": fresh} if fresh or mode == "uncached" else {}
    return {"prompt_eval_count": total}
