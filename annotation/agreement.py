"""Inter-annotator agreement: Cohen's kappa for two annotators, Krippendorff's alpha for any number.

A unit is one pair of responses of one task; each annotator's value for it is which of the two they ranked higher,
or a tie. A pair task is one unit; a K-wise ranking gives K-choose-2.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations


def pair_units(
    rankings_by_task: Mapping[int, Mapping[str, Sequence[int]]],
) -> dict[tuple[int, int, int], dict[str, str]]:
    """(task, i, j) -> {annotator: '<' if i ranked above j, '>' if below, '=' if tied}."""
    units: dict[tuple[int, int, int], dict[str, str]] = {}
    for task, rankings in rankings_by_task.items():
        for annotator, ranks in rankings.items():
            for i, j in combinations(range(len(ranks)), 2):
                value = "<" if ranks[i] < ranks[j] else (">" if ranks[i] > ranks[j] else "=")
                units.setdefault((task, i, j), {})[annotator] = value
    return units


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Nominal alpha from each unit's values (missing judgements simply absent). None when it is undefined:
    fewer than two pairable values, or one value used throughout (no disagreement is possible to expect)."""
    coincidences: defaultdict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for a, b in combinations(values, 2):
            coincidences[(a, b)] += 1 / (m - 1)
            coincidences[(b, a)] += 1 / (m - 1)
    totals: defaultdict[Hashable, float] = defaultdict(float)
    for (a, _), weight in coincidences.items():
        totals[a] += weight
    n = sum(totals.values())
    observed = sum(w for (a, b), w in coincidences.items() if a != b)
    expected = sum(totals[a] * totals[b] for a in totals for b in totals if a != b)
    if n <= 1 or expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Kappa of two annotators over the same items; None when chance agreement is total (one label only)."""
    if len(first) != len(second) or not first:
        raise ValueError("two equally long, non-empty label lists are needed")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    expected = sum(counts_a[label] * counts_b[label] for label in counts_a) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def mean_pairwise_kappa(units: Iterable[Mapping[str, str]]) -> tuple[float | None, int]:
    """Cohen's kappa of every two annotators over the units both judged, averaged weighted by those units (with two
    annotators in all, this is their kappa). Returns the mean and how many annotator pairs entered it."""
    shared: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for judged in units:
        for a, b in combinations(sorted(judged), 2):
            left, right = shared.setdefault((a, b), ([], []))
            left.append(judged[a])
            right.append(judged[b])
    weighted, weight, pairs = 0.0, 0, 0
    for left, right in shared.values():
        kappa = cohen_kappa(left, right)
        if kappa is None:
            continue
        weighted, weight, pairs = weighted + kappa * len(left), weight + len(left), pairs + 1
    return (weighted / weight if weight else None), pairs
