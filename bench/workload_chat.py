"""Seeded chat-session traffic for the end-to-end benchmark: apps, sessions, growing histories.

Ten apps (seven with a short system prompt of 16-63 words, three with a long one) share a model list
round robin. Fifty sessions pick an app and send 3-20 turns; each turn resends the whole history (system
prompt, earlier user turns and answers) plus the new user message, as chat clients do. Some turns paste
a document: most sessions that paste stay under ~12k tokens, a few paste enough to grow past 50k.
Sessions start at random times and users think between turns, so a few sessions overlap; requests are
ordered by their arrival time. The ground-truth template of a request is its app.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.workload import WorkloadRequest, words

APPS = 10
SHORT_SYSTEM_APPS = 7
SESSIONS = 50
TURNS = (3, 20)
SESSION_GAP_S = 400.0  # mean time between session starts (exponential)
THINK_S = (20.0, 90.0)  # a user's pause between an answer and the next turn
DOC_SESSIONS = 8  # sessions that paste one mid-sized document (1.5k-6k words)
BIG_SESSIONS = 3  # sessions whose pasted documents take the history past 50k tokens
BIG_DOC_WORDS = (22_000, 30_000)


@dataclass(frozen=True)
class App:
    template_id: int
    model: str
    system: str
    weight: float


@dataclass
class _Session:
    app: App
    turns: int
    pastes: dict[int, int]  # turn index -> document words
    start_s: float


def make_apps(models: list[str], seed: int) -> list[App]:
    rng = random.Random(seed)
    apps = []
    for i in range(APPS):
        size = rng.randint(16, 63) if i < SHORT_SYSTEM_APPS else rng.randint(300, 1500)
        apps.append(App(i + 1, models[i % len(models)], words(rng, size), rng.uniform(0.5, 2.0)))
    return apps


def _sessions(
    apps: list[App], rng: random.Random, big_models: tuple[str, ...], doc_models: tuple[str, ...]
) -> list[_Session]:
    out: list[_Session] = []
    t = 0.0
    for _ in range(SESSIONS):
        t += rng.expovariate(1.0 / SESSION_GAP_S)
        app = rng.choices(apps, weights=[a.weight for a in apps])[0]
        out.append(_Session(app, rng.randint(*TURNS), {}, t))
    order = list(range(SESSIONS))
    rng.shuffle(order)
    big_candidates = [i for i in order if not big_models or out[i].app.model in big_models]
    for i in big_candidates[:BIG_SESSIONS]:
        s = out[i]
        s.turns = max(s.turns, 8)
        first = rng.randint(1, s.turns // 2)
        s.pastes = {first: rng.randint(*BIG_DOC_WORDS), first + 2: rng.randint(*BIG_DOC_WORDS)}
    mid = [i for i in order if not out[i].pastes and (not doc_models or out[i].app.model in doc_models)]
    mid = mid[:DOC_SESSIONS]
    for i in mid:
        s = out[i]
        s.pastes = {rng.randint(0, s.turns - 1): rng.randint(1_500, 6_000)}
    return out


def make_chat_requests(
    models: list[str],
    seed: int,
    *,
    big_models: tuple[str, ...] = (),
    doc_models: tuple[str, ...] = (),
    limit: int | None = None,
) -> list[WorkloadRequest]:
    """Every turn of every session in arrival order (the first ``limit`` when given).

    ``big_models`` restricts the sessions that grow past 50k tokens to those models, ``doc_models`` the
    sessions that paste a mid-sized document (empty = any)."""
    rng = random.Random(seed)
    apps = make_apps(models, seed)
    timed: list[tuple[float, int, int, list[dict[str, str]], str]] = []
    for number, session in enumerate(_sessions(apps, rng, big_models, doc_models)):
        history: list[dict[str, str]] = [{"role": "system", "content": session.app.system}]
        t = session.start_s
        for turn in range(session.turns):
            text = words(rng, rng.randint(10, 120))
            if turn in session.pastes:
                text += "\n\n" + words(rng, session.pastes[turn])
            history.append({"role": "user", "content": text})
            timed.append((t, number, session.app.template_id, list(history), session.app.model))
            history.append({"role": "assistant", "content": words(rng, rng.randint(30, 300))})
            t += rng.uniform(*THINK_S)
    timed.sort(key=lambda item: (item[0], item[1]))
    if limit is not None:
        timed = timed[:limit]
    return [
        WorkloadRequest(i, model, messages, template_id)
        for i, (_t, _n, template_id, messages, model) in enumerate(timed)
    ]
