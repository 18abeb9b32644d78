"""The Bradley-Terry preference loss, with margins, soft labels, reward centering and K-wise groups."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PairIndex:
    """Which scores in a flat batch of responses face each other. One row per comparison."""

    winner: torch.Tensor  # (P,) index into the flat rewards
    loser: torch.Tensor  # (P,)
    margin: torch.Tensor  # (P,) zero where the data has none or margins are off
    strength: torch.Tensor  # (P,) P(winner preferred); 1.0 for hard labels
    group: torch.Tensor  # (P,) which prompt group the comparison belongs to
    groups: int


def preference_loss(rewards: torch.Tensor, pairs: PairIndex, center_coef: float = 0.0) -> torch.Tensor:
    """-log sigmoid(r_w - r_l - m), averaged within each prompt group, then over groups.

    Averaging within a group first gives a K-wise ranking the weight of one comparison (InstructGPT), so
    prompts with many responses do not dominate. With soft labels p < 1 the loss is the cross-entropy
    -(p log sigmoid(d) + (1 - p) log sigmoid(-d)). Centering adds coef * mean((r_w + r_l)^2), which pins the
    reward's free offset near zero.
    """
    diff = rewards[pairs.winner] - rewards[pairs.loser] - pairs.margin
    per_pair = -(pairs.strength * F.logsigmoid(diff) + (1 - pairs.strength) * F.logsigmoid(-diff))
    per_group = torch.zeros(pairs.groups, dtype=per_pair.dtype, device=per_pair.device)
    per_group.index_add_(0, pairs.group, per_pair)
    counts = torch.bincount(pairs.group, minlength=pairs.groups).clamp(min=1).to(per_pair.dtype)
    loss = (per_group / counts).mean()
    if center_coef:
        loss = loss + center_coef * ((rewards[pairs.winner] + rewards[pairs.loser]) ** 2).mean()
    return loss


def pair_accuracy(rewards: torch.Tensor, pairs: PairIndex) -> torch.Tensor:
    """Share of comparisons whose winner scores strictly higher (a tie counts as wrong)."""
    return (rewards[pairs.winner] > rewards[pairs.loser]).float().mean()
