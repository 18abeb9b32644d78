"""How well per-step scores find wrong steps, and how well their aggregates pick solutions.

- Step AUC: the chance that a right step scores above a wrong one (0.5 is chance), with a bootstrap 95% interval;
  the same for the step's position alone (later steps are wrong more often), the baseline a PRM must beat; and the
  AUC within a position (right and wrong steps compared only at the same index), which position alone cannot lift
  above 0.5: what the PRM reads from the steps' content.
- First wrong step, as ProcessBench scores it: a solution's predicted first wrong step is its first step with
  P(right) < 0.5; a hit on a solution with a wrong step when the index is the labelled one, on a solution with none
  when none is predicted; F1 is the harmonic mean of the two accuracies.
- Best-of-N per prompt, by each aggregate of the steps' P(right) (min, last, product, mean): how often the solution it
  picks has every step right, against random choice and the oracle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from arbiter.bundle.steps import STEP_AGGREGATES, aggregate
from arbiter.data.steps import StepwiseExample
from arbiter.text_table import text_table
from arbiter.training.evaluate import Share, share

BOOTSTRAP = 200


class Auc(TypedDict):
    auc: float
    low: float
    high: float


class FirstWrong(TypedDict):
    with_wrong_step: Share  # recall: solutions with a wrong step whose first one was found exactly
    all_right: Share
    f1: float
    precision: Share  # solutions where a first wrong step was predicted: it is the labelled one


class BestOfN(TypedDict):
    prompts: int
    solutions_per_prompt: float
    by_aggregate: dict[str, Share]
    random: float
    oracle: float


class StepMetrics(TypedDict):
    solutions: int
    steps: int
    wrong_steps: int
    step_accuracy: Share
    step_auc: Auc
    position_auc: Auc
    within_position_auc: Auc
    first_wrong: FirstWrong
    best_of_n: BestOfN


def step_metrics(examples: Sequence[StepwiseExample], probabilities: Sequence[np.ndarray]) -> StepMetrics:
    """`probabilities[i]`: P(right) of each step of examples[i] that the model read (a cut solution's kept steps)."""
    labels = np.concatenate([np.asarray(e.labels[: len(p)], dtype=bool) for e, p in zip(examples, probabilities,
                                                                                             strict=True)])  # fmt: skip
    scores = np.concatenate(probabilities)
    position = np.concatenate([-np.arange(len(p), dtype=float) for p in probabilities])
    solutions = [(np.asarray(e.labels[: len(p)]), p) for e, p in zip(examples, probabilities, strict=True)]
    return {
        "solutions": len(examples),
        "steps": len(labels),
        "wrong_steps": int((~labels).sum()),
        "step_accuracy": share((scores >= 0.5) == labels),
        "step_auc": auc_interval(scores, labels),
        "position_auc": auc_interval(position, labels),
        "within_position_auc": auc_interval(scores, labels, strata=position),
        "first_wrong": _first_wrong(solutions),
        "best_of_n": _best_of_n(examples, probabilities),
    }


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (the Mann-Whitney U statistic over n+ n-)."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # average rank of each distinct value, 1-based: ties share the mean of the ranks they span
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2)[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def stratified_auc(scores: np.ndarray, labels: np.ndarray, strata: np.ndarray) -> float:
    """The AUC over the (positive, negative) pairs that share a stratum: each stratum's AUC weighted by its pairs."""
    total, pairs = 0.0, 0
    for value in np.unique(strata):
        inside = strata == value
        n = int(labels[inside].sum()) * int((~labels[inside]).sum())
        if n:
            total += auc(scores[inside], labels[inside]) * n
            pairs += n
    return total / pairs if pairs else float("nan")


def auc_interval(scores: np.ndarray, labels: np.ndarray, seed: int = 0, strata: np.ndarray | None = None) -> Auc:
    def measure(at: np.ndarray | slice) -> float:
        return auc(scores[at], labels[at]) if strata is None else stratified_auc(scores[at], labels[at], strata[at])

    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(scores), len(scores)) for _ in range(BOOTSTRAP)]
    values = [v for v in (measure(d) for d in draws) if not np.isnan(v)]
    low, high = (float(np.percentile(values, q)) for q in (2.5, 97.5)) if values else (float("nan"),) * 2
    return {"auc": measure(slice(None)), "low": low, "high": high}


def _first_wrong(solutions: list[tuple[np.ndarray, np.ndarray]]) -> FirstWrong:
    def first(flags: np.ndarray) -> int:
        return int(np.argmax(flags)) if flags.any() else -1

    wrong_hits: list[bool] = []
    right_hits: list[bool] = []
    predicted_hits: list[bool] = []
    for labels, p in solutions:
        truth, predicted = first(~labels.astype(bool)), first(p < 0.5)
        (right_hits if truth == -1 else wrong_hits).append(truth == predicted)
        if predicted != -1:
            predicted_hits.append(truth == predicted)
    with_wrong, all_right = share(np.asarray(wrong_hits, bool)), share(np.asarray(right_hits, bool))
    a, b = with_wrong["accuracy"], all_right["accuracy"]
    return {"with_wrong_step": with_wrong, "all_right": all_right, "f1": 2 * a * b / (a + b) if a + b else 0.0,
            "precision": share(np.asarray(predicted_hits, bool))}  # fmt: skip


def _best_of_n(examples: Sequence[StepwiseExample], probabilities: Sequence[np.ndarray]) -> BestOfN:
    by_prompt: dict[str, list[tuple[bool, np.ndarray]]] = defaultdict(list)
    for e, p in zip(examples, probabilities, strict=True):
        by_prompt[e.prompt_key].append((all(e.labels), p))
    groups = [g for g in by_prompt.values() if len(g) >= 2]
    picks: dict[str, list[bool]] = {name: [] for name in STEP_AGGREGATES}
    for group in groups:
        for name in STEP_AGGREGATES:
            values = np.array([aggregate(p, name) for _, p in group])
            picks[name].append(group[int(np.argmax(values))][0])
    return {
        "prompts": len(groups),
        "solutions_per_prompt": float(np.mean([len(g) for g in groups])) if groups else 0.0,
        "by_aggregate": {name: share(np.asarray(hits, bool)) for name, hits in picks.items()},
        "random": float(np.mean([np.mean([c for c, _ in g]) for g in groups])) if groups else float("nan"),
        "oracle": float(np.mean([any(c for c, _ in g) for g in groups])) if groups else float("nan"),
    }


def format_step_metrics(m: StepMetrics) -> str:
    def pct(s: Share) -> str:
        return f"{s['accuracy']:.3f} [{s['accuracy_low']:.3f}, {s['accuracy_high']:.3f}] ({s['count']})"

    def auc_text(a: Auc) -> str:
        return f"{a['auc']:.3f} [{a['low']:.3f}, {a['high']:.3f}]"

    rows: list[Sequence[object]] = [
        ["measure", "value"],
        ["step AUC (chance 0.5)", auc_text(m["step_auc"])],
        ["step AUC of position alone", auc_text(m["position_auc"])],
        ["step AUC within a position (content)", auc_text(m["within_position_auc"])],
        ["step accuracy at P=0.5", pct(m["step_accuracy"])],
        ["first wrong step found: recall (solutions with one)", pct(m["first_wrong"]["with_wrong_step"])],
        ["first wrong step right: precision (where one is predicted)", pct(m["first_wrong"]["precision"])],
        ["no wrong step predicted (all-right solutions)", pct(m["first_wrong"]["all_right"])],
        ["first wrong step F1 (ProcessBench)", f"{m['first_wrong']['f1']:.3f}"],
    ]
    best = m["best_of_n"]
    for name, hits in best["by_aggregate"].items():
        rows.append([f"best of {best['solutions_per_prompt']:.1f} by {name}", pct(hits)])
    rows.append(["best of N: random / oracle", f"{best['random']:.3f} / {best['oracle']:.3f}"])
    title = f"Process reward: {m['solutions']} solutions, {m['steps']} steps ({m['wrong_steps']} wrong)"
    return title + "\n" + text_table(rows)
