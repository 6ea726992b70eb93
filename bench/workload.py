"""Seeded, templated Ollama traffic for the end-to-end benchmark (issue 6).

A workload is a list of chat requests with ground truth (which template, or a
one-off). Templates have a fixed head (system prompt + instructions, 200-6,000
words) and a variable tail (the user's part); a few "long-document" templates
carry tails far beyond common context defaults. The mix can shift: templates
appear and disappear over the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "dor", "en", "ix", "ul")
_PUNCT = (",", ".", ";", ":")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))


def words(rng: random.Random, n: int) -> str:
    """``n`` pseudo-words with occasional punctuation (each word and mark is one matcher unit)."""
    out: list[str] = []
    for i in range(n):
        out.append(_word(rng))
        if i % 13 == 12:
            out.append(rng.choice(_PUNCT))
    return " ".join(out)


@dataclass(frozen=True)
class Template:
    template_id: int
    model: str
    system: str
    instructions: str
    tail_words: tuple[int, int]
    weight: float
    # Fraction of the run during which the template is active (shifting mix).
    active: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class WorkloadRequest:
    index: int
    model: str
    messages: list[dict[str, str]]
    template_id: int  # 0 = one-off
    body: dict = field(default_factory=dict)

    def payload(self) -> dict:
        return {"model": self.model, "messages": self.messages, "stream": False, **self.body}


def make_templates(
    models: list[str],
    count: int,
    seed: int,
    *,
    long_doc_models: tuple[str, ...] = (),
    shifting: bool = True,
    long_doc_tail: tuple[int, int] = (20_000, 40_000),
) -> list[Template]:
    """``count`` templates spread over ``models`` (round robin: repeat a name to weight it); heads of
    200-6,000 words; one long-document template per entry of ``long_doc_models``, tails of ``long_doc_tail``."""
    rng = random.Random(seed)
    templates: list[Template] = []
    for i in range(count):
        model = models[i % len(models)]
        head = rng.choice((200, 400, 800, 1500, 2500, 4000, 6000))
        system_words = max(50, head // 3)
        tail = (rng.randint(10, 60), rng.randint(100, 600))
        active = (0.0, 1.0)
        if shifting and i % 5 == 3:
            start = rng.uniform(0.2, 0.5)
            active = (start, min(1.0, start + 0.4))
        templates.append(
            Template(
                template_id=i + 1,
                model=model,
                system=words(rng, system_words),
                instructions=words(rng, head - system_words),
                tail_words=tail,
                weight=rng.uniform(0.5, 2.0),
                active=active,
            )
        )
    for j, model in enumerate(long_doc_models):
        rng_doc = random.Random(seed * 1000 + j)
        templates.append(
            Template(
                template_id=count + j + 1,
                model=model,
                system=words(rng_doc, 300),
                instructions=words(rng_doc, 500),
                tail_words=long_doc_tail,
                weight=0.6,
            )
        )
    return templates


def make_requests(
    templates: list[Template], n: int, seed: int, *, one_off_share: float = 0.05
) -> list[WorkloadRequest]:
    """``n`` requests: weighted templates active at that point of the run, plus one-off prompts."""
    rng = random.Random(seed + 1)
    models = sorted({t.model for t in templates})
    requests: list[WorkloadRequest] = []
    for i in range(n):
        progress = i / max(1, n - 1)
        if rng.random() < one_off_share:
            requests.append(
                WorkloadRequest(
                    i, rng.choice(models), [{"role": "user", "content": words(rng, rng.randint(20, 400))}], 0
                )
            )
            continue
        active = [t for t in templates if t.active[0] <= progress <= t.active[1]]
        template = rng.choices(active, weights=[t.weight for t in active])[0]
        tail = words(rng, rng.randint(*template.tail_words))
        messages = [
            {"role": "system", "content": template.system},
            {"role": "user", "content": template.instructions + "\n\n" + tail},
        ]
        requests.append(WorkloadRequest(i, template.model, messages, template.template_id))
    return requests
