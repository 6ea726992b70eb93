"""``bench.detection`` over many seeds of both corpora, one table per corpus.

Run: python -m bench.detection_seeds [--seeds 1-12] [--corpus shapes,slots] [--jobs 2]

Each run is ``python -m bench.detection --corpus C --seed S`` in its own process (its own embedded
Postgres); the table gives precision, recall and templates per true template per seed, and for the
shapes corpus the same per head-length bucket, with how many seeds meet the targets of issue 14
(precision >= 0.99 and recall >= 0.95). The raw JSON line of every run is printed first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

PRECISION_TARGET = 0.99
RECALL_TARGET = 0.95


def run_one(corpus: str, seed: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.detection", "--corpus", corpus, "--seed", str(seed)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _row(name: str, cells: list[str]) -> str:
    return f"| {name} | " + " | ".join(cells) + " |"


def table(corpus: str, results: list[dict]) -> str:
    """A markdown table: one column per seed."""
    lines = [_row("seed", [str(r["seed"]) for r in results]), _row("---", ["---"] * len(results))]
    for key in ("precision", "recall", "templates_per_true_template"):
        lines.append(_row(key, [f"{r[key]:.3f}" for r in results]))
    met = sum(r["precision"] >= PRECISION_TARGET and r["recall"] >= RECALL_TARGET for r in results)
    notes = [
        f"{corpus}: precision >= {PRECISION_TARGET} and recall >= {RECALL_TARGET} on {met} of {len(results)} seeds"
    ]
    buckets = [b for b in ("<16", "16-63", "64-127", "128-255", ">=256") if any(b in r["by_bucket"] for r in results)]
    for b in buckets if corpus == "shapes" else []:
        cells = [r["by_bucket"].get(b) for r in results]
        lines.append(
            _row(
                f"{b}: P / R / templates per true",
                [
                    f"{c['precision']:.2f} / {c['recall']:.2f} / {c['templates_per_true_template']:.1f}" if c else "—"
                    for c in cells
                ],
            )
        )
        ok = sum(1 for c in cells if c and c["precision"] >= PRECISION_TARGET and c["recall"] >= RECALL_TARGET)
        notes.append(f"bucket {b}: both targets on {ok} of {sum(1 for c in cells if c)} seeds")
    if corpus == "shapes":
        lines.append(
            _row("chat turns on their app's template", [f"{r['chat_turns_on_app_template']:.3f}" for r in results])
        )
        lines.append(_row("sessions split", [f"{r['sessions_split']} of {r['sessions']}" for r in results]))
    return "\n".join([*lines, "", *notes])


def parse_seeds(spec: str) -> list[int]:
    low, _, high = spec.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="1-12")
    parser.add_argument("--corpus", default="shapes,slots")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    runs = [(c, s) for c in args.corpus.split(",") for s in parse_seeds(args.seeds)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda run: run_one(*run), runs))
    for r in results:
        print(json.dumps(r))
    for corpus in args.corpus.split(","):
        print()
        print(table(corpus, [r for r in results if r["corpus"] == corpus]))


if __name__ == "__main__":
    main()
