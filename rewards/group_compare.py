"""Rewards for a group of responses to one prompt from pairwise comparisons among them (GRPO's groups, judged
pairwise as NeMo Gym's genrm_compare judges them): which pairs to compare, and two ways to turn the comparisons'
P(first preferred) into one number per response.

- bradley_terry: the strengths s that maximise sum_(i,j) p_ij log sigmoid(s_i - s_j) + (1 - p_ij) log
  sigmoid(s_j - s_i), with a small Gaussian prior (`PRIOR`) so that a response that wins every comparison keeps a
  finite strength; on the logit scale, mean 0 over the group.
- win_rate: each response's mean P(winning) over the comparisons it took part in, on [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Literal

import numpy as np

PairStrategy = Literal["all_pairs", "circular"]
GroupReward = Literal["bradley_terry", "win_rate"]
PRIOR = 0.01  # the prior's precision: strengths of a few units where comparisons are clear, not infinite


def comparison_pairs(n: int, how: PairStrategy) -> list[tuple[int, int]]:
    """all_pairs: every pair, n(n-1)/2 of them; circular: each response against the next round a circle, n of them
    (one for two responses): a cost linear in the group size for groups too big to compare fully."""
    if how == "all_pairs" or n <= 2:
        return list(combinations(range(n), 2))
    return [(i, (i + 1) % n) for i in range(n)]


def bradley_terry(n: int, pairs: Sequence[tuple[int, int]], p: Sequence[float], iterations: int = 100) -> np.ndarray:
    """The group's strengths from P(pair[0] preferred over pair[1]), by Newton's method on the concave objective."""
    s = np.zeros(n)
    if not pairs:
        return s
    first, second = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    target = np.asarray(p, dtype=np.float64)
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(s[first] - s[second])))
        residual = target - q
        gradient = np.bincount(first, residual, n) - np.bincount(second, residual, n) - PRIOR * s
        weight = q * (1 - q)
        hessian = -PRIOR * np.eye(n)
        np.add.at(hessian, (first, first), -weight)
        np.add.at(hessian, (second, second), -weight)
        np.add.at(hessian, (first, second), weight)
        np.add.at(hessian, (second, first), weight)
        step = np.linalg.solve(hessian, gradient)
        s -= step
        if np.abs(step).max() < 1e-10:
            break
    return s - s.mean()


def win_rate(n: int, pairs: Sequence[tuple[int, int]], p: Sequence[float]) -> np.ndarray:
    """Each response's mean P(winning) over its comparisons; 0.5 for a response in none (a group of one)."""
    wins, games = np.zeros(n), np.zeros(n)
    for (a, b), prob in zip(pairs, p, strict=True):
        wins[a] += prob
        wins[b] += 1 - prob
        games[a] += 1
        games[b] += 1
    return np.divide(wins, games, out=np.full(n, 0.5), where=games > 0)


def group_rewards(n: int, pairs: Sequence[tuple[int, int]], p: Sequence[float], how: GroupReward) -> np.ndarray:
    return bradley_terry(n, pairs, p) if how == "bradley_terry" else win_rate(n, pairs, p)
