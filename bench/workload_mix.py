"""The realistic mix for the end-to-end benchmark: chat sessions, RAG, agents and one-offs in shifting phases.

Real Ollama traffic is mostly chat (a short system prompt, then a history that grows turn by turn), RAG
(fixed instructions, variable retrieved passages, a question), agents (a long tool-schema head) and one-off
prompts. The run has four phases of equal length in which the shares of these kinds shift; chat turns keep
their sessions' order. Ground truth: chat turns belong to their app, RAG and agent requests to their app,
one-offs to none (template 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.workload import WorkloadRequest, words
from bench.workload_chat import make_chat_requests

KINDS = ("chat", "rag", "agent", "one-off")
PHASE_MIX = ((0.55, 0.20, 0.05, 0.20), (0.20, 0.50, 0.10, 0.20), (0.20, 0.10, 0.50, 0.20), (0.35, 0.25, 0.15, 0.25))
"""Per phase, the shares of KINDS."""
RAG_APPS, AGENT_APPS = 4, 3
RAG_BASE, AGENT_BASE = 100, 200  # template ids of RAG and agent apps start above these
OPENINGS = (
    "I want you to",
    "Summarise the following",
    "Translate this into French:",
    "Explain why",
    "Write a short poem about",
    "Fix the bug in this code:",
)


@dataclass(frozen=True)
class _App:
    template_id: int
    model: str
    head: str


def _apps(models: list[str], rng: random.Random) -> tuple[list[_App], list[_App]]:
    rag = [_App(RAG_BASE + i + 1, models[i % len(models)], words(rng, rng.randint(80, 300))) for i in range(RAG_APPS)]
    agents = [
        _App(AGENT_BASE + i + 1, models[(i + 1) % len(models)], words(rng, rng.randint(1_500, 4_000)))
        for i in range(AGENT_APPS)
    ]
    return rag, agents


def _rag(app: _App, rng: random.Random) -> list[dict[str, str]]:
    passages = "\n\n".join(words(rng, rng.randint(150, 400)) for _ in range(rng.randint(3, 6)))
    return [
        {"role": "system", "content": app.head},
        {"role": "user", "content": f"Context:\n{passages}\n\nQuestion: {words(rng, rng.randint(10, 30))}"},
    ]


def _agent(app: _App, rng: random.Random) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": app.head}, {"role": "user", "content": words(rng, rng.randint(20, 100))}]
    for _ in range(rng.randint(0, 3)):  # earlier tool calls and their results
        messages += [
            {"role": "assistant", "content": words(rng, rng.randint(10, 40))},
            {"role": "tool", "content": words(rng, rng.randint(50, 600))},
        ]
    return messages


def _one_off(rng: random.Random) -> list[dict[str, str]]:
    opening = rng.choice(OPENINGS) if rng.random() < 0.5 else ""
    return [{"role": "user", "content": f"{opening} {words(rng, rng.randint(10, 800))}".strip()}]


def make_mix_requests(
    models: list[str], n: int, seed: int, *, big_models: tuple[str, ...] = ()
) -> list[WorkloadRequest]:
    """``n`` requests of the realistic mix; ``big_models`` holds the chat sessions that grow past 50k tokens."""
    rng = random.Random(seed * 7919 + 1)
    rag, agents = _apps(models, rng)
    chat = iter(make_chat_requests(models, seed, big_models=big_models))
    out: list[WorkloadRequest] = []
    for i in range(n):
        kind = rng.choices(KINDS, weights=PHASE_MIX[min(len(PHASE_MIX) - 1, i * len(PHASE_MIX) // n)])[0]
        turn = next(chat, None) if kind == "chat" else None
        if turn is not None:
            out.append(WorkloadRequest(i, turn.model, turn.messages, turn.template_id))
        elif kind == "rag":
            app = rng.choice(rag)
            out.append(WorkloadRequest(i, app.model, _rag(app, rng), app.template_id))
        elif kind == "agent":
            app = rng.choice(agents)
            out.append(WorkloadRequest(i, app.model, _agent(app, rng), app.template_id))
        else:
            out.append(WorkloadRequest(i, rng.choice(models), _one_off(rng), 0))
    return out
