"""Figures that compare arms run on the same requests: against the defaults, the baselines and the oracles."""

from __future__ import annotations

from bench.e2e_arms import BASELINES
from bench.e2e_blame import intact_time
from bench.e2e_report import quantile

LEARNING_WINDOW = 50  # requests per window of the learning-cost rule
WITHIN = 0.05  # "within 5 % of the phase-oracle"


def _ratio(arm: list[float | None], reference: list[float | None], keep: list[bool]) -> float | None:
    pairs = [(a, o) for a, o, k in zip(arm, reference, keep) if k and a is not None and o is not None]
    return sum(a for a, _ in pairs) / sum(o for _, o in pairs) - 1.0 if pairs else None


def learning_cost(arm: list[float | None], reference: list[float | None]) -> dict:
    """Requests until every later window of LEARNING_WINDOW requests is within WITHIN of ``reference`` on the
    same requests, the extra seconds paid before that point, and the gap after it."""
    n = len(arm)
    settled_from = n
    for start in range(((n - 1) // LEARNING_WINDOW) * LEARNING_WINDOW, -1, -LEARNING_WINDOW):
        window = [start <= i < start + LEARNING_WINDOW for i in range(n)]
        gap = _ratio(arm, reference, window)
        if gap is not None and gap > WITHIN:
            break
        settled_from = start
    before = [(a or 0.0) - (o or 0.0) for a, o in zip(arm[:settled_from], reference[:settled_from])]
    after = _ratio(arm, reference, [i >= settled_from for i in range(n)])
    return {
        "learning_requests": settled_from,
        "learning_extra_s": round(sum(before), 3),
        "gap_after_learning": None if after is None else round(after, 4),
    }


def compare(by_arm: dict[str, dict], settled: list[bool]) -> None:
    """Adds to each arm's figures: p50 and mean over the requests the defaults served intact, and where their
    time went (bench/e2e_blame.py); mean over the requests no
    baseline (nor the optimizer) truncated; the gap to the oracle on settled requests; the learning cost and
    gap against the phase-oracle."""
    passthrough = by_arm.get("passthrough")
    compared = [a for a in (*BASELINES, "optimizer") if a in by_arm]
    untruncated = [
        all(not by_arm[a]["_truncated"][i] for a in compared)
        for i in range(len(next(iter(by_arm.values()))["_latencies"]))
    ]
    for f in by_arm.values():
        lat = f["_latencies"]
        if passthrough is not None:
            intact = [not t for t in passthrough["_truncated"]]
            kept_intact = [x for x, k in zip(lat, intact) if k and x is not None]
            f["p50_intact_s"] = round(quantile(kept_intact, 0.5), 3)
            f["mean_intact_s"] = round(sum(kept_intact) / len(kept_intact), 3) if kept_intact else None
            f["intact_time"] = intact_time(f["_records"], f["_loads"], intact)
        kept = [x for x, k in zip(lat, untruncated) if k and x is not None]
        f["mean_untruncated_s"] = round(sum(kept) / len(kept), 3) if kept else None
        if "oracle" in by_arm:
            gap = _ratio(lat, by_arm["oracle"]["_latencies"], settled)
            f["oracle_gap"] = None if gap is None else round(gap, 4)
        if "phase-oracle" in by_arm:
            f |= learning_cost(lat, by_arm["phase-oracle"]["_latencies"])
