"""Held-out evaluation of a reward model: accuracy, margins, calibration and length bias.

Accuracy counts a pair right only when the chosen response scores strictly higher (a tie is wrong, as in
RewardBench). Calibration is the expected calibration error of P(chosen) = sigmoid(r_c - r_r), over
10 confidence bins of max(p, 1 - p). Length is measured in characters of the response. Every accuracy comes with
a percentile bootstrap 95% interval (`accuracy_interval`) that resamples prompts, each with all of its pairs: the
held-out split is drawn by prompt, and pairs of one prompt are not independent (FineGrained QA's 304 held-out pairs
come from 55 prompts and share responses; pandalm's 84 from 17), so resampling pairs would make the interval too
narrow. Where every prompt has one pair, the two are the same.

Two views follow RewardBench 2: best-of-N for K-wise groups (a hit only when the best response scores highest of
all; a tie for the top shares the hit, 1/k for k tied, as RewardBench 2 scores it; chance is 1/N), and the
length-controlled split (accuracy on pairs whose chosen response is the longer, and on those where it is the
shorter: a model that rewards length is good on the first and poor on the second).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from arbiter.bundle.manifest import Evaluation, SourceEvaluation
from arbiter.bundle.render import Prompt
from arbiter.data.schema import PreferenceGroup
from arbiter.text_table import text_table

Scorer = Callable[[Sequence[Prompt], Sequence[str]], np.ndarray]
CALIBRATION_BINS = 10


class ReliabilityBin(TypedDict):
    """One confidence bin of the reliability table."""

    low: float
    high: float
    confidence: float
    accuracy: float
    count: int


class Accuracy(TypedDict):
    """Accuracy of one source or subset, with its bootstrap 95% interval."""

    pairs: int
    prompts: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    mean_margin: float


class Share(TypedDict):
    """A share of hits with its bootstrap 95% interval."""

    count: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float


class LengthControlled(TypedDict):
    chosen_longer: Share
    chosen_shorter: Share


class BestOfN(Share):
    """K-wise groups with one response preferred to all others: how often it scores highest of all."""

    chance: float


class LengthBias(TypedDict):
    pairs_with_different_length: int
    labels_prefer_longer: float
    model_prefers_longer: float
    score_length_spearman: float


class _Metrics(TypedDict):
    pairs: int
    accuracy: float
    mean_margin: float
    ece: float
    length_bias: LengthBias
    reliability: list[ReliabilityBin]
    by_source: dict[str, Accuracy]
    length_controlled: LengthControlled


class Metrics(_Metrics, total=False):
    """What `metrics` returns (and eval.json holds); by_subset only when some pair has a subset, best_of_n only
    when some group ranks more than two responses with one best."""

    by_subset: dict[str, Accuracy]
    best_of_n: BestOfN


@dataclass
class ScoredPairs:
    """Every comparison of the evaluated groups, flattened, with both scores."""

    chosen: np.ndarray
    rejected: np.ndarray
    chosen_len: np.ndarray
    rejected_len: np.ndarray
    source: list[str]
    subset: list[str | None]
    prompt: np.ndarray  # each pair's prompt key: the unit the intervals resample
    best_hit: np.ndarray  # per K-wise group (K > 2) with one best response: 1 if it scored highest, 1/k if k tied
    best_of: np.ndarray  # that group's K
    best_source: list[str]  # that group's source
    best_subset: list[str | None]  # and subset
    best_prompt: np.ndarray  # and prompt key


def score_pairs(groups: Sequence[PreferenceGroup], scorer: Scorer) -> ScoredPairs:
    prompts = [g.prompt for g in groups for _ in g.responses]
    responses = [r for g in groups for r in g.responses]
    return pairs_from_scores(groups, scorer(prompts, responses))


def pairs_from_scores(groups: Sequence[PreferenceGroup], scores: np.ndarray) -> ScoredPairs:
    """scores: one per response, groups in order, responses in order within each group."""
    chosen, rejected, c_len, r_len, source, subset, prompt = [], [], [], [], [], [], []
    best_hit, best_of, best_source, best_subset, best_prompt = [], [], [], [], []
    offset = 0
    for g in groups:
        best = _best_response(g)
        if best is not None:
            own = scores[offset : offset + len(g.responses)]
            top = own == own.max()
            best_hit.append(1 / top.sum() if top[best] else 0.0)
            best_of.append(len(g.responses))
            best_source.append(g.source)
            best_subset.append(g.subset)
            best_prompt.append(g.prompt_key)
        for c in g.comparisons:
            chosen.append(scores[offset + c.winner])
            rejected.append(scores[offset + c.loser])
            c_len.append(len(g.responses[c.winner]))
            r_len.append(len(g.responses[c.loser]))
            source.append(g.source)
            subset.append(g.subset)
            prompt.append(g.prompt_key)
        offset += len(g.responses)
    as_array = np.asarray
    return ScoredPairs(
        as_array(chosen, float),
        as_array(rejected, float),
        as_array(c_len),
        as_array(r_len),
        source,
        subset,
        as_array(prompt, str),
        as_array(best_hit, float),
        as_array(best_of, int),
        best_source,
        best_subset,
        as_array(best_prompt, str),
    )


def _best_response(group: PreferenceGroup) -> int | None:
    """In a group of more than two responses, the one that wins a comparison against every other, if one does."""
    if len(group.responses) <= 2:
        return None
    beaten: dict[int, set[int]] = defaultdict(set)
    for c in group.comparisons:
        beaten[c.winner].add(c.loser)
    best = [w for w, losers in beaten.items() if len(losers) == len(group.responses) - 1]
    return best[0] if best else None


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def calibration(diff: np.ndarray, bins: int = CALIBRATION_BINS) -> tuple[float, list[ReliabilityBin]]:
    """ECE and the reliability table of confidence max(p, 1-p) against the share predicted right."""
    p = sigmoid(diff)
    confidence = np.maximum(p, 1 - p)
    correct = (diff > 0).astype(float)
    edges = np.linspace(0.5, 1.0, bins + 1)
    table: list[ReliabilityBin] = []
    ece = 0.0
    for i in range(bins):
        upper = confidence <= edges[i + 1] if i == bins - 1 else confidence < edges[i + 1]
        in_bin = (confidence >= edges[i]) & upper
        if not in_bin.any():
            continue
        conf, acc = float(confidence[in_bin].mean()), float(correct[in_bin].mean())
        ece += in_bin.mean() * abs(acc - conf)
        table.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "confidence": conf,
                "accuracy": acc,
                "count": int(in_bin.sum()),
            }
        )
    return float(ece), table


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    rank = lambda v: np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)  # noqa: E731
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def metrics(pairs: ScoredPairs) -> Metrics:
    diff = pairs.chosen - pairs.rejected
    ece, reliability = calibration(diff)
    different, labels_longer, model_longer = _longer_wins(pairs.chosen_len, pairs.rejected_len, diff)
    lengths = np.concatenate([pairs.chosen_len, pairs.rejected_len]).astype(float)
    scores = np.concatenate([pairs.chosen, pairs.rejected])
    longer, shorter = pairs.chosen_len > pairs.rejected_len, pairs.chosen_len < pairs.rejected_len
    result: Metrics = {
        "pairs": len(diff),
        "accuracy": float((diff > 0).mean()) if len(diff) else float("nan"),
        "mean_margin": float(diff.mean()) if len(diff) else float("nan"),
        "ece": ece,
        "length_bias": {
            "pairs_with_different_length": different,
            "labels_prefer_longer": float("nan") if labels_longer is None else labels_longer,
            "model_prefers_longer": float("nan") if model_longer is None else model_longer,
            "score_length_spearman": spearman(scores, lengths),
        },
        "reliability": reliability,
        "by_source": _accuracy_by(pairs.source, diff, pairs.prompt),
        "length_controlled": {
            "chosen_longer": share(diff[longer] > 0, pairs.prompt[longer]),
            "chosen_shorter": share(diff[shorter] > 0, pairs.prompt[shorter]),
        },
    }
    subsets = [s for s in pairs.subset if s is not None]
    if subsets:
        result["by_subset"] = _accuracy_by([s or "-" for s in pairs.subset], diff, pairs.prompt)
    if len(pairs.best_hit):
        best = share(pairs.best_hit, pairs.best_prompt)
        result["best_of_n"] = {**best, "chance": float((1 / pairs.best_of).mean())}
    return result


def share(hits: np.ndarray, prompts: np.ndarray | None = None) -> Share:
    """`prompts`: each hit's prompt key, when hits of one prompt are to be resampled together."""
    low, high = accuracy_interval(hits.astype(float), clusters=prompts)
    return {
        "count": len(hits),
        "accuracy": float(hits.mean()) if len(hits) else float("nan"),
        "accuracy_low": low,
        "accuracy_high": high,
    }


def accuracy_interval(
    correct: np.ndarray, resamples: int = 1000, seed: int = 0, clusters: np.ndarray | None = None
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the share correct, resampling pairs, or the `clusters` (one key per
    pair, such as its prompt) with all of their pairs (fixed seed: the same data gives the same interval)."""
    if len(correct) == 0:
        return float("nan"), float("nan")
    shares = bootstrap_shares(correct, resamples, seed, clusters)
    return float(np.percentile(shares, 2.5)), float(np.percentile(shares, 97.5))


def bootstrap_shares(
    correct: np.ndarray, resamples: int, seed: int | Sequence[int], clusters: np.ndarray | None = None
) -> np.ndarray:
    """The share correct in each of `resamples` resamplings (with replacement) of the items, or of the clusters
    (the cluster bootstrap: a drawn cluster brings all of its items, and the share is over every item drawn). With
    one item per cluster it draws exactly what the item bootstrap draws."""
    hits, sizes = correct, np.ones(len(correct))
    if clusters is not None:
        _, first, cluster = np.unique(clusters, return_index=True, return_inverse=True)
        cluster = np.argsort(np.argsort(first))[cluster]  # numbered in order of appearance, as the items are
        hits, sizes = np.bincount(cluster, weights=correct), np.bincount(cluster).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(hits), size=(resamples, len(hits)))
    shares: np.ndarray = hits[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    return shares


def _distinct(keys: np.ndarray) -> int:
    return len(np.unique(keys))


def evaluation_section(pairs: ScoredPairs, data: str) -> Evaluation:
    """The bundle's evaluation: overall and per source, each accuracy with its interval and its length bias."""
    diff = pairs.chosen - pairs.rejected
    sources = np.asarray(pairs.source)

    def report(where: np.ndarray) -> SourceEvaluation:
        right = share(diff[where] > 0, pairs.prompt[where])
        _, labels_longer, model_longer = _longer_wins(pairs.chosen_len[where], pairs.rejected_len[where], diff[where])
        return SourceEvaluation(
            pairs=int(where.sum()),
            prompts=_distinct(pairs.prompt[where]),
            accuracy=right["accuracy"],
            accuracy_low=right["accuracy_low"],
            accuracy_high=right["accuracy_high"],
            labels_prefer_longer=labels_longer,
            model_prefers_longer=model_longer,
        )

    return Evaluation(
        data=data,
        overall=report(np.ones(len(diff), dtype=bool)),
        by_source={s: report(sources == s) for s in sorted(set(pairs.source))},
        ece=calibration(diff)[0] if len(diff) else None,
    )


def _longer_wins(
    chosen_len: np.ndarray, rejected_len: np.ndarray, diff: np.ndarray
) -> tuple[int, float | None, float | None]:
    """Among pairs whose responses differ in length: how many, the share whose chosen one is the longer, and the
    share where the model scores the longer one higher (None when no pair differs)."""
    different = chosen_len != rejected_len
    if not different.any():
        return 0, None, None
    longer = chosen_len[different] > rejected_len[different]
    model = np.where(longer, diff[different] > 0, diff[different] < 0)
    return int(different.sum()), float(longer.mean()), float(model.mean())


def _accuracy_by(keys: list[str], diff: np.ndarray, prompts: np.ndarray) -> dict[str, Accuracy]:
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        buckets[key].append(i)
    result: dict[str, Accuracy] = {}
    for k, idx in sorted(buckets.items()):
        right = share(diff[idx] > 0, prompts[idx])
        result[k] = {
            "pairs": len(idx),
            "prompts": _distinct(prompts[idx]),
            "accuracy": right["accuracy"],
            "accuracy_low": right["accuracy_low"],
            "accuracy_high": right["accuracy_high"],
            "mean_margin": float(diff[idx].mean()),
        }
    return result


def format_table(result: Metrics) -> str:
    """The on-screen summary: one row per source, then the overall row and the bias figures."""
    rows = [("source", "pairs", "prompts", "accuracy", "95% interval", "margin")]
    for name, m in result["by_source"].items():
        interval = f"[{m['accuracy_low']:.3f}, {m['accuracy_high']:.3f}]"
        rows.append(
            (name, str(m["pairs"]), str(m["prompts"]), f"{m['accuracy']:.3f}", interval, f"{m['mean_margin']:+.3f}")
        )
    rows.append(("ALL", str(result["pairs"]), "", f"{result['accuracy']:.3f}", "", f"{result['mean_margin']:+.3f}"))
    lines = [text_table(rows)]
    bias = result["length_bias"]
    lines.append(
        f"ECE {result['ece']:.3f} | longer response wins: labels {_pct(bias['labels_prefer_longer'])}, "
        f"model {_pct(bias['model_prefers_longer'])} | spearman(score, length) {bias['score_length_spearman']:+.3f}"
    )
    split = result["length_controlled"]
    lines.append(
        f"length-controlled: chosen is longer {_share_text(split['chosen_longer'])} | "
        f"chosen is shorter {_share_text(split['chosen_shorter'])}"
    )
    if "best_of_n" in result:
        best = result["best_of_n"]
        lines.append(f"best-of-N over K-wise groups: {_share_text(best)}, chance {best['chance']:.3f}")
    return "\n".join(lines)


def _share_text(share: Share) -> str:
    if not share["count"]:
        return "n/a (0)"
    return f"{share['accuracy']:.3f} [{share['accuracy_low']:.3f}, {share['accuracy_high']:.3f}] ({share['count']})"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def to_json(result: Mapping[str, object]) -> str:
    """Strict JSON: a metric that is undefined (NaN) is written as null."""

    def clean(value: object) -> object:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(result), indent=2, allow_nan=False)


def write_json(result: Mapping[str, object], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(result))
