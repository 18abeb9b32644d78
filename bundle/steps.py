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
