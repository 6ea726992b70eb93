"""Detection quality on a generated corpus, through a real matcher (Match, then Observe, per prompt).

Run: .venv/bin/python -m bench.detection [--templates 50 --fills 40 --one-offs 200]

Corpus: templates of 80..1,400 tokens with 2-4 slots filled by 1..8 tokens (words, numbers,
ids: different lengths), half of them with a variable tail of 20..300 tokens; pairs of
templates share their first 64..128 tokens and differ later (at least 16 tokens of their own);
plus unrelated one-off prompts.
Prompts are interleaved at random. A decision counts after the first 5 observations of its
template: positive = Match said matched; true positive = the matched template is owned by the
prompt's template (owner = the true template of most of the observations folded into it).
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

WARM_UP = 5
# A template sharing a prefix has some text of its own after it (else it is that prefix, not a template).
MIN_OWN_TOKENS = 16
_VOCAB = [f"{a}{b}" for a in ("al", "be", "co", "da", "el", "fo", "gi", "ha", "io", "ju", "ka", "lo", "mu",
                                "ne", "or", "pi", "qu", "ra", "si", "tu") for b in ("n", "rt", "sk", "m", "ve",
                                "lo", "dy", "x", "pa", "th", "ce", "go")]
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


def make_corpus(templates: int, fills: int, one_offs: int, seed: int) -> list[tuple[int, str]]:
    """(true template, text) pairs, interleaved; one-offs have template -1."""
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
            prompts.append((t, text))
    prompts += [(-1, " ".join(_words(rng, rng.randint(20, 1500)))) for _ in range(one_offs)]
    rng.shuffle(prompts)
    return prompts


async def run(args: argparse.Namespace) -> dict:
    corpus = make_corpus(args.templates, args.fills, args.one_offs, args.seed)
    settings = MatcherSettings(cache_size=0)
    seen: Counter[int] = Counter()
    folded: dict[int, Counter[int]] = defaultdict(Counter)  # template id → true template counts
    decisions: list[tuple[int, int]] = []  # (true template, matched template id or 0)
    async with embedded_database() as (_dsn, pool):
        matcher = await start_matcher(pool, ServerConfig(listen="127.0.0.1:0", metrics_port=0), settings)
        try:
            async with create_channel(matcher.address) as channel:
                stub = matcher_pb2_grpc.MatcherStub(channel)
                for truth, text in corpus:
                    match = await stub.Match(matcher_pb2.MatchRequest(model="bench", text=text))
                    if truth < 0 or seen[truth] >= WARM_UP:
                        decisions.append((truth, match.template_id if match.matched else 0))
                    seen[truth] += 1
                    obs = await stub.Observe(matcher_pb2.ObserveRequest(
                        model="bench", fingerprints=match.fingerprints, template_id=match.template_id))
                    folded[obs.template_id][truth] += 1
        finally:
            await matcher.stop(0)
        templates_created = await pool.fetchval("SELECT count(*) FROM matcher_template")
    owner = {tid: counts.most_common(1)[0][0] for tid, counts in folded.items()}
    table = Counter()
    for truth, tid in decisions:
        if truth < 0:
            table["one_off_matched (FP)" if tid else "one_off_unmatched (TN)"] += 1
        elif not tid:
            table["template_unmatched (FN)"] += 1
        elif owner.get(tid) == truth:
            table["template_matched_own (TP)"] += 1
        else:
            table["template_matched_other (FP)"] += 1
    tp = table["template_matched_own (TP)"]
    fp = table["one_off_matched (FP)"] + table["template_matched_other (FP)"]
    template_decisions = sum(1 for truth, _ in decisions if truth >= 0)
    return {
        "bench": "detection", "templates": args.templates, "fills": args.fills, "one_offs": args.one_offs,
        "prompts": len(corpus), "templates_created": templates_created, "confusion": dict(sorted(table.items())),
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "recall": round(tp / template_decisions, 4) if template_decisions else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--templates", type=int, default=50)
    parser.add_argument("--fills", type=int, default=40)
    parser.add_argument("--one-offs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
