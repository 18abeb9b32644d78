"""Turning preference groups into padded tensors: each response encoded once, comparisons as indices."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from arbiter.bundle.render import InputBuilder, pad_batch
from arbiter.data.schema import PreferenceGroup
from arbiter.training.loss import PairIndex


@dataclass
class EncodedGroup:
    group: PreferenceGroup
    ids: list[list[int]]  # one token sequence per response
    cut: list[str | None]  # per response: None, "prompt" (its start was cut) or "response" (the response's end)
    lower: list[torch.Tensor] | None = None  # with cached frozen layers: their output, one tensor per response

    @property
    def tokens(self) -> int:
        return sum(len(i) for i in self.ids)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pairs: PairIndex

    def to(self, device: torch.device) -> Batch:
        p = self.pairs
        moved = PairIndex(
            p.winner.to(device),
            p.loser.to(device),
            p.margin.to(device),
            p.strength.to(device),
            p.group.to(device),
            p.groups,
        )
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), moved)


def encode_groups(groups: Sequence[PreferenceGroup], builder: InputBuilder) -> list[EncodedGroup]:
    items = []
    for g in groups:
        encoded = builder.encode_many([g.prompt] * len(g.responses), g.responses)
        cut = [("response" if e.response_cut else "prompt") if e.truncated else None for e in encoded]
        items.append(EncodedGroup(g, [e.ids for e in encoded], cut))
    return items


def collate(
    encoded: Sequence[EncodedGroup],
    pad_id: int,
    padding_side: str,
    use_margin: bool,
    use_strength: bool,
    margin_scale: float = 1.0,
) -> Batch:
    sequences: list[list[int]] = []
    winner, loser, margin, strength, group = [], [], [], [], []
    for g_index, item in enumerate(encoded):
        offset = len(sequences)
        sequences.extend(item.ids)
        for c in item.group.comparisons:
            winner.append(offset + c.winner)
            loser.append(offset + c.loser)
            margin.append(margin_scale * c.margin if use_margin and c.margin is not None else 0.0)
            strength.append(c.strength if use_strength and c.strength is not None else 1.0)
            group.append(g_index)
    ids, mask = pad_batch(sequences, pad_id, padding_side)
    pairs = PairIndex(
        torch.tensor(winner),
        torch.tensor(loser),
        torch.tensor(margin),
        torch.tensor(strength),
        torch.tensor(group),
        len(encoded),
    )
    return Batch(torch.from_numpy(ids), torch.from_numpy(mask), pairs)


class Sized(Protocol):
    @property
    def tokens(self) -> int: ...


Item = TypeVar("Item", bound=Sized)


def batches_forever(items: Sequence[Item], batch_size: int, seed: int) -> Iterator[list[Item]]:
    """Shuffled epochs of micro-batches; within a window of batches, similar lengths go together."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(items), generator=generator).tolist()
        window = batch_size * 16
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: items[i].tokens)
            batches = [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
            for pick in torch.randperm(len(batches), generator=generator).tolist():
                yield [items[i] for i in batches[pick]]
