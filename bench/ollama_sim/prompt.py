"""Ollama's prompt truncation (v0.30.11+), reproduced from server/prompt.go and llm/llama_server.go.

Stage 1 (chat, when `truncate` is not false): drop whole messages from the front until the rendered
prompt fits num_ctx, always keeping the last message and the system messages before the cut.
Stage 2 (runner): a prompt longer than num_ctx - 1 tokens keeps its first num_keep (+1 for BOS) tokens
and the tail, cut to num_ctx - max((num_ctx - n_keep) // 2, 1) tokens; with context shift off it is an
HTTP 400 instead, and with `truncate: false` llama-server answers exceed_context_size_error (400).
"""

from __future__ import annotations

from dataclasses import dataclass

from .profiles import ModelProfile
from .tokens import Segment, prompt_tokens, render

PROMPT_TOO_LONG = (
    "the prompt is longer than the context length currently available to the model; shorten the prompt, "
    "adjust the context length in settings, or use a model with a longer context length"
)


class PromptError(Exception):
    """A request Ollama rejects with HTTP 400."""


@dataclass(frozen=True)
class PreparedPrompt:
    """The prompt the runner evaluates, with what truncation did to it."""

    segments: list[Segment]  # rendered segments kept by stage 1
    sent_tokens: int  # tokens of the full prompt as sent (before any truncation)
    tokens: int  # tokens evaluated (prompt_eval_count)
    messages_dropped: int  # stage 1
    cut_head: bool  # stage 2 cut tokens after the kept head (prefix cache cannot be reused)

    @property
    def truncated(self) -> bool:
        return self.tokens < self.sent_tokens


def prune_messages(messages: list[dict], model: ModelProfile, num_ctx: int) -> list[dict]:
    """Stage 1, the loop of chatPrompt: keep system messages before the cut + the newest messages."""
    n = len(messages) - 1
    system: list[dict] = []
    for i in range(n - 1, -1, -1):
        system = [m for m in messages[:i] if m.get("role") == "system"]
        if prompt_tokens(render(system + messages[i:], model), model) <= num_ctx:
            n = i
        else:
            break
    return system + messages[max(n, 0) :]


def prepare(
    messages: list[dict], model: ModelProfile, num_ctx: int, num_keep: int, truncate: bool, shift: bool
) -> PreparedPrompt:
    """Apply both stages; raise PromptError where Ollama answers 400."""
    full = render(messages, model)
    sent = prompt_tokens(full, model)
    kept = prune_messages(messages, model, num_ctx) if truncate else messages
    segments = render(kept, model) if len(kept) != len(messages) else full
    tokens = prompt_tokens(segments, model)
    cut = False
    if tokens > num_ctx - 1:
        if not truncate:
            raise PromptError(
                f"request ({tokens} tokens) exceeds the available context size ({num_ctx} tokens), "
                "try increasing it (exceed_context_size_error)"
            )
        if not shift:
            raise PromptError(PROMPT_TOO_LONG)
        n_keep = min(num_keep + (1 if model.adds_bos else 0), tokens)
        tokens = num_ctx - max((num_ctx - n_keep) // 2, 1)
        cut = True
    return PreparedPrompt(segments, sent, tokens, len(messages) - len(kept), cut)
