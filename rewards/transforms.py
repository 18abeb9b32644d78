"""The transforms a spec applies to a component's values or to the total: vectorized numpy on float64 arrays.

Every std here is the population std (ddof=0), so a batch or group of one gives 0 rather than NaN."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arbiter.rewards.running import RunningStats
from arbiter.rewards.spec import (
    Clip,
    GroupNorm,
    LengthPenalty,
    Logit,
    Normalize,
    RunningNorm,
    Scale,
    Transform,
    Whiten,
)


@dataclass(frozen=True)
class TransformContext:
    """What transforms need besides the values: the items' lengths and groups, and where running state lives."""

    target: str  # for messages: "component 'rm'" or "the total"
    key: str  # running-stats key prefix for this target; the transform's position in its list is appended
    words: np.ndarray  # (n,) len(response.split()) per item
    groups: Sequence[str | None]  # (n,) group id per item, None where the caller gave none
    running: RunningStats
    normalization: tuple[float, float] | None = None  # the model's stored (mean, std), for `normalize`
    update: bool = True  # False: running_norm reads its statistics without folding this batch in


def normalize(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    if not std > 0:
        raise ValueError(f"normalize needs a positive stored std, got {std}")
    return (x - mean) / std


def whiten(x: np.ndarray, eps: float) -> np.ndarray:
    if x.size == 0:
        return x.copy()
    return (x - x.mean()) / (x.std() + eps)


def group_norm(x: np.ndarray, groups: Sequence[str | None], eps: float) -> np.ndarray:
    """(x - group mean) / (group std + eps), each item against the items sharing its group id."""
    if len(groups) != x.size:
        raise ValueError(f"{len(groups)} group ids for {x.size} values")
    missing = [i for i, g in enumerate(groups) if g is None]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise ValueError(f"group_norm needs a group id on every item; {len(missing)} have none (items {shown})")
    if x.size == 0:
        return x.copy()
    _, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    index = index.ravel()
    counts = np.bincount(index)
    mean = np.bincount(index, weights=x) / counts
    centered = x - mean[index]
    std = np.sqrt(np.bincount(index, weights=centered**2) / counts)
    return centered / (std[index] + eps)


def logit(x: np.ndarray, eps: float) -> np.ndarray:
    p = np.clip(x, eps, 1 - eps)
    return np.log(p / (1 - p))


def clip(x: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)


def length_penalty(x: np.ndarray, words: np.ndarray, coef: float, target: float) -> np.ndarray:
    return x - coef * np.maximum(0.0, words - target)


def running_norm(
    x: np.ndarray, running: RunningStats, key: str, momentum: float, eps: float, update: bool = True
) -> np.ndarray:
    """Fold the batch into the running statistics first, then normalize it with the updated ones. Without update
    (probes such as canaries that must not move the statistics) the stored ones are used as they are, or, before
    the key's first batch, this batch's own mean and std: what a first update would have given."""
    if x.size == 0:
        return x.copy()  # nothing to learn from, and update() refuses empty batches
    if update:
        mean, std = running.update(key, x, momentum)
    else:
        mean, std = running.get(key) or (float(x.mean()), float(x.std()))
    return (x - mean) / (std + eps)


def apply_transform(t: Transform, x: np.ndarray, ctx: TransformContext, index: int) -> np.ndarray:
    if isinstance(t, Normalize):
        if ctx.normalization is None:
            raise ValueError(f"{ctx.target}: normalize needs the model's stored mean/std, and none was given")
        return normalize(x, *ctx.normalization)
    if isinstance(t, RunningNorm):
        return running_norm(x, ctx.running, f"{ctx.key}/{index}", t.momentum, t.eps, ctx.update)
    if isinstance(t, GroupNorm):
        try:
            return group_norm(x, ctx.groups, t.eps)
        except ValueError as exc:
            raise ValueError(f"{ctx.target}: {exc}") from exc
    if isinstance(t, Whiten):
        return whiten(x, t.eps)
    if isinstance(t, Logit):
        return logit(x, t.eps)
    if isinstance(t, Clip):
        return clip(x, t.min, t.max)
    if isinstance(t, LengthPenalty):
        return length_penalty(x, ctx.words, t.coef, t.target)
    if isinstance(t, Scale):
        return x * t.mul + t.add
    raise TypeError(f"unknown transform {t!r}")


def apply_transforms(transforms: Sequence[Transform], x: np.ndarray, ctx: TransformContext) -> np.ndarray:
    """The transforms in order; running_norm's key is ctx.key + "/" + its position in the list."""
    out = np.array(x, dtype=np.float64)  # a copy even with no transforms, so results never alias their inputs
    for index, t in enumerate(transforms):
        out = apply_transform(t, out, ctx, index)
    return out
