"""Detection quality on a generated corpus, through a real matcher (Match, then Observe, per prompt).

Run: .venv/bin/python -m bench.detection [--templates 50 --fills 40 --one-offs 200] [--corpus shapes] [--seed S]

Corpus: templates of 80..1,400 tokens with 2-4 slots filled by 1..8 tokens (words, numbers,
ids: different lengths), half of them with a variable tail of 20..300 tokens; pairs of
templates share their first 64..128 tokens and differ later (at least 16 tokens of their own);
plus unrelated one-off prompts.
Prompts are interleaved at random. A decision counts after the first 5 observations of its
template: positive = Match said matched; true positive = the matched template is owned by the
prompt's template (owner = the true template of most of the observations folded into it).
``--corpus shapes``: the prompt shapes of ``bench.shapes`` (short heads, short prompts, long variable
parts, chat sessions, RAG, agents, one-offs). Figures are also given per bucket of the true template's
fixed-head length (a one-off matched to a template counts against that template's bucket);
``templates_per_true_template`` counts the templates alive at the end that a true template owns.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import Counter, defaultdict

from matcher_service.main import start_matcher
from matcher_service.settings import MatcherSettings
from ollama_optimizer.channels import create_channel
from ollama_optimizer.config import ServerConfig
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

from .lookup import embedded_database
from .shapes import Prompt, make_shapes

WARM_UP = 5
# A template sharing a prefix has some text of its own after it (else it is that prefix, not a template).
MIN_OWN_TOKENS = 16
_VOCAB = [
    f"{a}{b}"
    for a in (
        "al",
        "be",
        "co",
        "da",
        "el",
        "fo",
        "gi",
        "ha",
        "io",
        "ju",
        "ka",
        "lo",
        "mu",
        "ne",
        "or",
        "pi",
        "qu",
        "ra",
        "si",
        "tu",
    )
    for b in ("n", "rt", "sk", "m", "ve", "lo", "dy", "x", "pa", "th", "ce", "go")
]
_PUNCT = [",", ".", ":", ";", "(", ")", "-"]


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(_PUNCT) if rng.random() < 0.12 else rng.choice(_VOCAB) for _ in range(n)]


def _fill(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return str(rng.randrange(10 ** rng.randint(1, 8)))
    if kind < 0.45:
        return f"{rng.getrandbits(64):016x}"
    return " ".join(_words(rng, rng.randint(1, 8)))


def make_corpus(templates: int, fills: int, one_offs: int, seed: int) -> list[Prompt]:
    """Prompts of the templates, interleaved; one-offs have template -1."""
    rng = random.Random(seed)
    skeletons: list[tuple[list[list[str]], bool]] = []
    for t in range(templates):
        length = rng.randint(80, 1400)
        if t % 2 == 1:  # shares its first 64..128 tokens with the previous template, then differs
            prefix = [w for part in skeletons[-1][0] for w in part][: rng.randint(64, 128)]
            length = max(length, len(prefix) + MIN_OWN_TOKENS)
            body = prefix + _words(rng, length - len(prefix))
        else:
            body = _words(rng, length)
        cuts = sorted(rng.sample(range(60, max(61, length - 10)), rng.randint(2, 4)))
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, length])]
        skeletons.append((parts, rng.random() < 0.5))
    prompts = []
    for t, (parts, tail) in enumerate(skeletons):
        for _ in range(fills):
            text = " ".join(" ".join(part) + " " + _fill(rng) for part in parts[:-1]) + " " + " ".join(parts[-1])
            if tail:
                text += " " + " ".join(_words(rng, rng.randint(20, 300)))
            prompts.append(Prompt(t, "slots", len(parts[0]), text))
    prompts += [Prompt(-1, "one_off", 0, " ".join(_words(rng, rng.randint(20, 1500)))) for _ in range(one_offs)]
    rng.shuffle(prompts)
    return prompts


BUCKETS = ((0, 16, "<16"), (16, 64, "16-63"), (64, 128, "64-127"), (128, 256, "128-255"), (256, 1 << 30, ">=256"))


def bucket(head: int) -> str:
    return next(name for low, high, name in BUCKETS if low <= head < high)


async def observe_corpus(
    corpus: list[Prompt],
) -> tuple[list[tuple[Prompt, int]], dict[int, Counter[int]], set[int], int]:
    """Match then Observe every prompt through a real matcher: (decisions, true templates folded per
    template id, the template ids alive at the end, templates created)."""
    settings = MatcherSettings(cache_size=0)
    seen: Counter[int] = Counter()
    folded: dict[int, Counter[int]] = defaultdict(Counter)
    decisions: list[tuple[Prompt, int]] = []  # (prompt, matched template id or 0)
    created = 0
    async with embedded_database() as (_dsn, pool):
        matcher = await start_matcher(pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), settings)
        try:
            async with create_channel(matcher.address) as channel:
                stub = matcher_pb2_grpc.MatcherStub(channel)
                for prompt in corpus:
                    match = await stub.Match(matcher_pb2.MatchRequest(model="bench", text=prompt.text))
                    if prompt.truth < 0 or seen[prompt.truth] >= WARM_UP:
                        decisions.append((prompt, match.template_id if match.matched else 0))
                    seen[prompt.truth] += 1
                    obs = await stub.Observe(
                        matcher_pb2.ObserveRequest(
                            model="bench", fingerprints=match.fingerprints, template_id=match.template_id
                        )
                    )
                    folded[obs.template_id][prompt.truth] += 1
                    created += obs.created
        finally:
            await matcher.stop(0)
        alive = {r["id"] for r in await pool.fetch("SELECT id FROM matcher_template")}
    return decisions, folded, alive, created


def score(
    corpus: list[Prompt], decisions: list[tuple[Prompt, int]], folded: dict[int, Counter[int]], alive: set[int]
) -> dict:
    """Precision, recall and templates per true template, overall and per head bucket."""
    owner = {tid: counts.most_common(1)[0][0] for tid, counts in folded.items()}
    head = {p.truth: p.head for p in corpus if p.truth >= 0}
    table: Counter[str] = Counter()
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for prompt, tid in decisions:
        owned = owner.get(tid, -1)
        if prompt.truth < 0:
            outcome = "one_off_matched (FP)" if tid else "one_off_unmatched (TN)"
            if tid and owned >= 0:
                per[bucket(head[owned])]["fp"] += 1
        elif not tid:
            outcome = "template_unmatched (FN)"
        elif owned == prompt.truth:
            outcome = "template_matched_own (TP)"
        else:
            outcome = "template_matched_other (FP)"
            if owned >= 0:
                per[bucket(head[owned])]["fp"] += 1
        table[outcome] += 1
        if prompt.truth >= 0:
            per[bucket(prompt.head)]["decisions"] += 1
            per[bucket(prompt.head)]["tp"] += outcome.endswith("(TP)")
    owned_templates = Counter(bucket(head[owner[t]]) for t in alive if owner.get(t, -1) >= 0)
    truths = Counter(bucket(h) for h in head.values())
    by_bucket = {}
    for _low, _high, name in BUCKETS:
        c = per[name]
        if not truths[name]:
            continue
        by_bucket[name] = {
            "true_templates": truths[name],
            "decisions": c["decisions"],
            "precision": _ratio(c["tp"], c["tp"] + c["fp"]),
            "recall": _ratio(c["tp"], c["decisions"]),
            "templates_per_true_template": _ratio(owned_templates[name], truths[name]),
        }
    tp = table["template_matched_own (TP)"]
    fp = table["one_off_matched (FP)"] + table["template_matched_other (FP)"]
    return {
        "confusion": dict(sorted(table.items())),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, sum(1 for p, _ in decisions if p.truth >= 0)),
        "templates_per_true_template": _ratio(sum(owned_templates.values()), len(head)),
        "by_bucket": by_bucket,
    }


def chat_sessions(corpus: list[Prompt], decisions: list[tuple[Prompt, int]], folded: dict[int, Counter[int]]) -> dict:
    """Chat turns: the share matched to their app's template (the one most of the app's prompts folded
    into), and the sessions whose decided turns went to more than one template."""
    main_template: dict[int, tuple[int, int]] = {}
    for tid, counts in folded.items():
        for truth, n in counts.items():
            if truth >= 0 and n > main_template.get(truth, (0, 0))[1]:
                main_template[truth] = (tid, n)
    turns = [(p, tid) for p, tid in decisions if p.session >= 0]
    per_session: dict[int, set[int]] = defaultdict(set)
    for p, tid in turns:
        per_session[p.session].add(tid)
    on_app = sum(1 for p, tid in turns if tid == main_template[p.truth][0])
    return {
        "chat_turns": len(turns),
        "chat_turns_on_app_template": _ratio(on_app, len(turns)),
        "sessions_split": sum(1 for ids in per_session.values() if len(ids) > 1),
        "sessions": len({p.session for p in corpus if p.session >= 0}),
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0


async def run(args: argparse.Namespace) -> dict:
    if args.corpus == "shapes":
        corpus = make_shapes(args.seed)
        header = {"bench": "detection", "corpus": "shapes", "seed": args.seed}
    else:
        corpus = make_corpus(args.templates, args.fills, args.one_offs, args.seed)
        header = {
            "bench": "detection",
            "corpus": "slots",
            "seed": args.seed,
            "templates": args.templates,
            "fills": args.fills,
            "one_offs": args.one_offs,
        }
    decisions, folded, alive, created = await observe_corpus(corpus)
    result = {
        **header,
        "prompts": len(corpus),
        "one_off_share": _ratio(sum(p.truth < 0 for p in corpus), len(corpus)),
        "templates_created": created,
        "templates_alive": len(alive),
        "templates_created_per_true_template": _ratio(created, len({p.truth for p in corpus if p.truth >= 0})),
        **score(corpus, decisions, folded, alive),
    }
    if args.corpus == "shapes":
        result.update(chat_sessions(corpus, decisions, folded))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--templates", type=int, default=50)
    parser.add_argument("--fills", type=int, default=40)
    parser.add_argument("--one-offs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--corpus",
        choices=("slots", "shapes"),
        default="slots",
        help="slots: the templated corpus above; shapes: the prompt shapes of bench.shapes",
    )
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
