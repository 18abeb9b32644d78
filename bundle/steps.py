"""How a process reward model reads a solution, identically in training and serving: the steps, each followed by
the step token (Qwen2.5-Math-PRM's layout), and what its step scores are reduced to. Never imports torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

# What RL code reduces a solution's step scores to: the weakest step (Math-Shepherd, the PRM papers' best-of-N),
# the last step, the product (P(every step right), if they were independent) and the mean.
StepAggregate = Literal["min", "last", "product", "mean"]
STEP_AGGREGATES: tuple[StepAggregate, ...] = get_args(StepAggregate)
# What a PRM's score is where a request does not choose (compare, rank, the engines' routes, reward specs).
DEFAULT_STEP_AGGREGATE: StepAggregate = "min"


def step_text(steps: Sequence[str], token: str) -> str:
    """The response a PRM reads: every step followed by the step token."""
    return "".join(f"{step}{token}" for step in steps)


def aggregate(p: np.ndarray, how: StepAggregate) -> float:
    """One number for a solution from the P(right) of its steps (at least one)."""
    if how == "min":
        return float(p.min())
    if how == "last":
        return float(p[-1])
    if how == "product":
        return float(np.prod(p))
    return float(p.mean())


def split_steps(response: str, separator: str) -> list[str]:
    """A response's steps: the parts between separators that hold more than whitespace (a separator at the end, or
    two in a row, open no empty step: training data has none); a response without a separator is one step."""
    parts = [part for part in response.split(separator) if part.strip()]
    return parts or [response]


def read_steps(logits: np.ndarray, ids: np.ndarray, mask: np.ndarray, token_id: int, width: int) -> np.ndarray:
    """[batch, width]: each row's logits at its step tokens, in order, then NaN. `logits`, `ids` and `mask` are the
    graph's [batch, tokens] output and inputs; padding is never read, whatever its id."""
    out = np.full((len(ids), width), np.nan)
    for row in range(len(ids)):
        at = np.flatnonzero((ids[row] == token_id) & (mask[row] == 1))[:width]
        out[row, : len(at)] = logits[row, at]
    return out


def step_logit(p: float) -> float:
    """The logit of an aggregate probability, kept finite: a product of many small P(right) underflows to 0."""
    q = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(q) - np.log1p(-q))


def probabilities(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))


def reduced_logit(logits: np.ndarray, how: StepAggregate) -> float:
    """One solution's score from its step logits: the logit of their aggregate P(right)."""
    return step_logit(aggregate(probabilities(logits), how))
