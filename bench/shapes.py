"""A seeded corpus of the prompt shapes of real Ollama traffic, in English words (``bench.detection --corpus shapes``).

Words come from the noun, verb and adjective lists the ``wonderwords`` package ships, mixed with the
function words of English (``_FUNCTION``) in sentences, so common words repeat as in real text. Shapes:

- ``short_head``: plain prompts, a fixed instruction of 16-63 tokens, then a request of 5-400 tokens;
- ``under_64``: plain prompts under 64 tokens in all (a fixed head of 16-40 tokens);
- ``head_64``: plain prompts, a fixed head of 64-127 tokens, then 100-2,000 tokens of variable text;
- ``long_head``: plain prompts, a fixed head of 128-700 tokens, then 20-600 tokens of variable text;
- ``chat``: apps with a system prompt of 4-300 tokens; sessions of 3-20 turns whose history grows;
- ``rag``: fixed instructions (system message or plain head), retrieved documents, a question;
- ``agent``: a system prompt with 3-10 tool schemas in JSON, sessions of 2-6 turns with tool calls;
- one-offs (truth -1, at least a fifth of the prompts), a third of them opening with a common phrase
  ("I want you to act as", "Summarise the following") and diverging, and plain prompts whose fixed head
  is under 16 tokens (counted as one-offs).

Every prompt carries its true template, the token length of that template's fixed head (for chat and
RAG/agent system messages: the system message, whatever its length) and its chat session, if any.
Chat prompts are the canonical text the plugin sends (``proxy_plugin.canonical.canonical_text``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources

from prompt_fingerprint import hash_tokens
from proxy_plugin.canonical import canonical_text

_FUNCTION = (
    "the the the a a an of of of to to to and and and in in is is for that with on as be by this it "
    "you your are or from at will can should not all each when if must more than into about which "
    "their they we our has have was were its one other some any only also such these those"
).split()
_OPENINGS = (
    "I want you to act as",
    "Summarise the following",
    "Please write a short",
    "Can you help me",
    "Translate the following into French:",
    "Explain like I am five:",
    "Write a poem about",
    "What is the difference between",
)
MIN_HEAD = 16  # a plain prompt whose fixed head is shorter counts as a one-off


@cache
def _lexicon() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    def load(name: str) -> tuple[str, ...]:
        text = resources.files("wonderwords.assets").joinpath(name).read_text(encoding="utf-8")
        return tuple(w for w in text.split("\n") if w.isalpha() and w.islower())

    return load("nounlist.txt"), load("verblist.txt"), load("adjectivelist.txt")


def _word(rng: random.Random) -> str:
    nouns, verbs, adjectives = _lexicon()
    r = rng.random()
    if r < 0.42:
        return rng.choice(_FUNCTION)
    if r < 0.72:
        return rng.choice(nouns)
    if r < 0.87:
        return rng.choice(verbs)
    return rng.choice(adjectives)


def sentences(rng: random.Random, tokens: int) -> str:
    """English-word sentences of about ``tokens`` matcher tokens (words and punctuation marks)."""
    out: list[str] = []
    count = 0
    while count < tokens:
        n = min(rng.randint(5, 17), max(1, tokens - count - 1))
        words = [_word(rng) for _ in range(n)]
        words[0] = words[0].capitalize()
        if n > 6 and rng.random() < 0.4:
            words[n // 2] += ","
            count += 1
        out.append(" ".join(words) + ".")
        count += n + 1
    return " ".join(out)


def units(text: str) -> int:
    """Matcher tokens of ``text``."""
    return hash_tokens(text, 1, normalize=False)[1]


@dataclass(frozen=True)
class Prompt:
    truth: int  # true template, -1 for a one-off
    kind: str
    head: int  # tokens of the template's fixed head (0 for a one-off)
    text: str
    session: int = -1  # chat session, -1 for a single prompt


def _chat_head(messages: list[dict[str, str]]) -> int:
    """Tokens of a chat's fixed head: its system message (with the role marker)."""
    return units(canonical_text({"messages": messages[:1]}))


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.streams: list[list[Prompt]] = []
        self.templates = 0
        self.sessions = 0

    def _new_template(self) -> int:
        self.templates += 1
        return self.templates - 1

    def plain(
        self, kind: str, head_tokens: tuple[int, int], var_tokens: tuple[int, int], count: int, suffix: bool = False
    ) -> None:
        """A plain-prompt template: fixed head, variable part, sometimes a fixed closing line."""
        rng = self.rng
        head = sentences(rng, rng.randint(*head_tokens))
        closing = sentences(rng, rng.randint(4, 12)) if suffix else ""
        truth = self._new_template()
        size = units(head)
        for _ in range(count):
            text = head + "\n\n" + sentences(rng, rng.randint(*var_tokens)) + ("\n" + closing if closing else "")
            self.streams.append([Prompt(truth, kind, size, text)])

    def under_64(self, count: int) -> None:
        rng = self.rng
        head = sentences(rng, rng.randint(16, 40))
        truth = self._new_template()
        size = units(head)
        for _ in range(count):
            self.streams.append(
                [Prompt(truth, "under_64", size, head + " " + sentences(rng, rng.randint(3, max(4, 60 - size))))]
            )

    def chat(
        self,
        system_tokens: int,
        sessions: int,
        turns: tuple[int, int],
        kind: str = "chat",
        system: str | None = None,
        user: tuple[int, int] = (5, 150),
    ) -> None:
        """An app: one system prompt, ``sessions`` conversations whose history grows turn by turn."""
        rng = self.rng
        system = system if system is not None else "You are " + sentences(rng, system_tokens)
        truth = self._new_template()
        for _ in range(sessions):
            session = self.sessions
            self.sessions += 1
            messages = [{"role": "system", "content": system}]
            stream = []
            for _turn in range(rng.randint(*turns)):
                messages.append({"role": "user", "content": sentences(rng, rng.randint(*user))})
                stream.append(
                    Prompt(truth, kind, _chat_head(messages), canonical_text({"messages": messages}), session)
                )
                messages.append({"role": "assistant", "content": sentences(rng, rng.randint(20, 200))})
            self.streams.append(stream)

    def rag(self, count: int) -> None:
        rng = self.rng
        instructions = sentences(rng, rng.randint(20, 200))
        as_chat = rng.random() < 0.5
        truth = self._new_template()
        for _ in range(count):
            docs = "\n".join(
                f"Document {i + 1}: " + sentences(rng, rng.randint(60, 400)) for i in range(rng.randint(1, 4))
            )
            question = "Question: " + sentences(rng, rng.randint(8, 30))
            if as_chat:
                messages = [
                    {"role": "system", "content": instructions},
                    {"role": "user", "content": "Context:\n" + docs + "\n\n" + question},
                ]
                self.streams.append(
                    [Prompt(truth, "rag", _chat_head(messages), canonical_text({"messages": messages}))]
                )
            else:
                text = instructions + "\n\nContext:\n" + docs + "\n\n" + question
                self.streams.append([Prompt(truth, "rag", units(instructions), text)])

    def agent(self, sessions: int) -> None:
        rng = self.rng
        nouns, verbs, _ = _lexicon()
        tools = [
            {
                "type": "function",
                "function": {
                    "name": f"{rng.choice(verbs)}_{rng.choice(nouns)}",
                    "description": sentences(rng, rng.randint(10, 40)),
                    "parameters": {
                        "type": "object",
                        "properties": {
                            rng.choice(nouns): {
                                "type": rng.choice(("string", "integer", "boolean")),
                                "description": sentences(rng, rng.randint(5, 20)),
                            }
                            for _ in range(rng.randint(1, 5))
                        },
                    },
                },
            }
            for _ in range(rng.randint(3, 10))
        ]
        system = (
            "You are an agent. "
            + sentences(rng, rng.randint(20, 60))
            + "\nYou have access to the following tools:\n"
            + json.dumps(tools, indent=1)
        )
        self.chat(0, sessions, (2, 6), kind="agent", system=system, user=(10, 100))

    def one_offs(self, count: int) -> None:
        rng = self.rng
        for _ in range(count):
            r = rng.random()
            if r < 0.33:
                text = rng.choice(_OPENINGS) + " " + sentences(rng, rng.randint(5, 400))
            elif r < 0.5:  # a chat without a system prompt
                text = canonical_text({"messages": [{"role": "user", "content": sentences(rng, rng.randint(5, 300))}]})
            else:
                text = sentences(rng, rng.randint(3, 800))
            self.streams.append([Prompt(-1, "one_off", 0, text)])

    def short_head_one_offs(self, templates: int, count: int) -> None:
        """Plain prompts with a fixed head under 16 tokens: one-offs by definition."""
        rng = self.rng
        for _ in range(templates):
            head = sentences(rng, rng.randint(4, MIN_HEAD - 4))
            for _ in range(count):
                self.streams.append([Prompt(-1, "one_off", 0, head + " " + sentences(rng, rng.randint(5, 300)))])

    def interleave(self) -> list[Prompt]:
        """All prompts in a random order that keeps each chat session's turns in order."""
        rng = self.rng
        pending = [list(reversed(s)) for s in self.streams]
        keys = sorted(((rng.random(), i) for i, s in enumerate(pending) for _ in s))
        return [pending[i].pop() for _, i in keys]


def make_shapes(seed: int, scale: int = 1) -> list[Prompt]:
    """The corpus of seed ``seed``: ~2,400 prompts per unit of ``scale``, at least 20 % one-offs."""
    b = _Builder(seed)
    rng = b.rng
    for _ in range(10 * scale):
        b.plain("short_head", (16, 63), (5, 400), 25, suffix=rng.random() < 0.3)
    for _ in range(6 * scale):
        b.under_64(25)
    for _ in range(10 * scale):
        b.plain("head_64", (64, 127), (100, 2000), 25, suffix=rng.random() < 0.3)
    for _ in range(4 * scale):
        b.plain("long_head", (128, 700), (20, 600), 25)
    for _ in range(8 * scale):
        b.chat(rng.choice((4, 8, 20, 40, 60, 100, 160, 300)), 6, (3, 20))
    for _ in range(5 * scale):
        b.rag(25)
    for _ in range(3 * scale):
        b.agent(6)
    b.short_head_one_offs(3 * scale, 20)
    templated = sum(len(s) for s in b.streams)
    b.one_offs(max(0, templated // 4 - 60 * scale))  # one-offs >= 20 % of all prompts
    return b.interleave()
