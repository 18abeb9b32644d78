"""The loss against numbers worked out by hand."""

from __future__ import annotations

import math

import torch

from arbiter.data.schema import Comparison, PreferenceGroup
from arbiter.training.batching import EncodedGroup, collate
from arbiter.training.loss import PairIndex, pair_accuracy, preference_loss


def nll(d: float) -> float:
    return -math.log(1 / (1 + math.exp(-d)))


def pairs(winner, loser, margin=None, strength=None, group=None):
    n = len(winner)
    return PairIndex(
        torch.tensor(winner),
        torch.tensor(loser),
        torch.tensor(margin or [0.0] * n),
        torch.tensor(strength or [1.0] * n),
        torch.tensor(group or list(range(n))),
        len(set(group or range(n))),
    )


def test_bradley_terry_by_hand():
    rewards = torch.tensor([2.0, 1.0, 0.0, 0.5])
    loss = preference_loss(rewards, pairs([0, 2], [1, 3]))
    assert math.isclose(loss.item(), (nll(1.0) + nll(-0.5)) / 2, rel_tol=1e-6)


def test_margin_is_subtracted_inside_the_sigmoid():
    rewards = torch.tensor([2.0, 1.0])
    loss = preference_loss(rewards, pairs([0], [1], margin=[0.75]))
    assert math.isclose(loss.item(), nll(1.0 - 0.75), rel_tol=1e-6)
    assert math.isclose(loss.item(), 0.5759394, rel_tol=1e-5)  # log(1 + e^-0.25)


def test_soft_label_cross_entropy():
    rewards = torch.tensor([1.0, 0.0])
    loss = preference_loss(rewards, pairs([0], [1], strength=[0.8]))
    assert math.isclose(loss.item(), 0.8 * nll(1.0) + 0.2 * nll(-1.0), rel_tol=1e-6)


def test_reward_centering_term():
    rewards = torch.tensor([2.0, 1.0, 0.0, 0.5])
    plain = preference_loss(rewards, pairs([0, 2], [1, 3]))
    centered = preference_loss(rewards, pairs([0, 2], [1, 3]), center_coef=0.01)
    assert math.isclose((centered - plain).item(), 0.01 * ((2 + 1) ** 2 + (0 + 0.5) ** 2) / 2, rel_tol=1e-5)


def test_kwise_pairs_are_averaged_within_their_prompt_first():
    # Group 0: three responses ranked 0 > 1 > 2 (three pairs); group 1: one pair.
    rewards = torch.tensor([3.0, 2.0, 0.0, 1.0, 1.5])
    p = pairs([0, 0, 1, 3], [1, 2, 2, 4], group=[0, 0, 0, 1])
    group0 = (nll(1.0) + nll(3.0) + nll(2.0)) / 3
    group1 = nll(-0.5)
    assert math.isclose(preference_loss(rewards, p).item(), (group0 + group1) / 2, rel_tol=1e-6)
    assert math.isclose(pair_accuracy(rewards, p).item(), 0.75)


def test_tie_counts_as_wrong():
    assert pair_accuracy(torch.tensor([1.0, 1.0]), pairs([0], [1])).item() == 0.0


def test_collate_encodes_each_response_once_and_indexes_pairs():
    kwise = PreferenceGroup("p", ("a", "b", "c"), (Comparison(0, 1), Comparison(0, 2), Comparison(1, 2)), "s")
    pair = PreferenceGroup("q", ("x", "y"), (Comparison(1, 0, margin=0.5, strength=0.9),), "s")
    encoded = [EncodedGroup(kwise, [[1, 2], [1, 2, 3], [1]], [None] * 3), EncodedGroup(pair, [[4], [5, 6]], [None] * 2)]
    batch = collate(encoded, pad_id=0, padding_side="right", use_margin=True, use_strength=True, margin_scale=2.0)
    assert batch.input_ids.shape == (5, 3)
    assert batch.attention_mask.sum(1).tolist() == [2, 3, 1, 1, 2]
    assert batch.pairs.winner.tolist() == [0, 0, 1, 4] and batch.pairs.loser.tolist() == [1, 2, 2, 3]
    assert batch.pairs.margin.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert batch.pairs.strength.tolist() == [1.0, 1.0, 1.0, 0.8999999761581421]
    assert batch.pairs.group.tolist() == [0, 0, 0, 1] and batch.pairs.groups == 2
    off = collate(encoded, pad_id=0, padding_side="left", use_margin=False, use_strength=False)
    assert off.pairs.margin.tolist() == [0.0] * 4 and off.pairs.strength.tolist() == [1.0] * 4
    assert off.attention_mask[2].tolist() == [0, 0, 1]
