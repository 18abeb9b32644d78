"""The process-reward objective: each solution is read once, its steps each followed by the step token, and the
score at each step token learns P(step right) by binary cross-entropy (one forward pass per solution, not per step).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from arbiter.bundle.manifest import ModelSpec, StepReading
from arbiter.bundle.render import InputBuilder, pad_batch
from arbiter.bundle.steps import step_text
from arbiter.data.steps import StepwiseExample, load_stepwise
from arbiter.text_table import text_table
from arbiter.training.config import TrainConfig
from arbiter.training.evaluate import write_json
from arbiter.training.model import RewardModel
from arbiter.training.split import LoadedData, load_split
from arbiter.training.step_metrics import format_step_metrics, step_metrics


@dataclass
class EncodedSteps:
    example: StepwiseExample
    ids: list[list[int]]  # the one sequence (a list of them, as the frozen-layer cache takes its items)
    positions: list[int]  # where each step's token is, for the steps that fit in max_length
    lower: list[torch.Tensor] | None = None

    @property
    def tokens(self) -> int:
        return len(self.ids[0])


@dataclass
class StepBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    row: torch.Tensor  # (S,) the sequence of each step read
    position: torch.Tensor  # (S,) its step token
    label: torch.Tensor  # (S,) 1.0 for a right step

    def to(self, device: torch.device) -> StepBatch:
        return StepBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.row, self.position,
                                                  self.label)))  # fmt: skip


def encode_steps(
    examples: Sequence[StepwiseExample], builder: InputBuilder, reading: StepReading, left_out: Counter[str]
) -> list[EncodedSteps]:
    """Encoded solutions; a solution cut at max_length keeps the steps whose token fits. Counted in `left_out` by
    reason: a solution whose text holds the step token (its steps could not be told apart), or with no step that fits.
    """
    items = []
    for example in examples:
        texts = [example.prompt] if isinstance(example.prompt, str) else [m["content"] for m in example.prompt]
        if any(reading.token in text for text in (*texts, *example.steps)):
            left_out["step_token_in_text"] += 1
            continue
        ids = builder.encode(example.prompt, step_text(example.steps, reading.token)).ids
        positions = [i for i, t in enumerate(ids) if t == reading.token_id]
        if not positions:
            left_out["no_step_within_max_length"] += 1
            continue
        items.append(EncodedSteps(example, [ids], positions))
    return items


def collate_steps(items: Sequence[EncodedSteps], pad_id: int, padding_side: str, last_step_only: bool) -> StepBatch:
    sequences = [item.ids[0] for item in items]
    ids, mask = pad_batch(sequences, pad_id, padding_side)
    row, position, label = [], [], []
    for r, item in enumerate(items):
        shift = ids.shape[1] - len(item.ids[0]) if padding_side == "left" else 0
        kept = list(enumerate(item.positions))
        if last_step_only:
            kept = kept[-1:]
        for step, at in kept:
            row.append(r)
            position.append(at + shift)
            label.append(float(item.example.labels[step]))
    return StepBatch(torch.from_numpy(ids), torch.from_numpy(mask), torch.tensor(row), torch.tensor(position),
                     torch.tensor(label))  # fmt: skip


def step_logits(scores: torch.Tensor, batch: StepBatch) -> torch.Tensor:
    """The model's (batch, tokens) logits at each step token read: (steps,)."""
    return scores[batch.row, batch.position]


class StepObjective:
    unit = "steps"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.left_out: Counter[str] = Counter()

    def load(self) -> LoadedData[StepwiseExample]:
        c = self.config
        return load_split(c.data, load_stepwise, c.eval_fraction, c.seed, c.max_groups_per_source,
                          c.balance_sources, unit="steps")  # fmt: skip

    def encode(self, examples: Sequence[StepwiseExample], builder: InputBuilder, spec: ModelSpec) -> list[EncodedSteps]:
        assert spec.steps is not None, "a PRM's spec reads steps (build_reward_model's step_token)"
        return encode_steps(examples, builder, spec.steps, self.left_out)

    def report_cuts(self, run: Path, train: Sequence[EncodedSteps], held_out: Sequence[EncodedSteps],
                    max_length: int) -> None:  # fmt: skip
        lines: list[Sequence[object]] = [["side", "solutions read", "steps read", "solutions cut"]]
        for side, items in (("train", train), ("eval", held_out)):
            cut = sum(len(i.positions) < len(i.example.steps) for i in items)
            lines.append([side, len(items), sum(len(i.positions) for i in items), cut])
        left_out = ", ".join(f"{reason} {count}" for reason, count in sorted(self.left_out.items())) or "none"
        print(f"Steps within max_length {max_length} (a cut solution loses its last steps; solutions left out: "
              f"{left_out}):\n" + text_table(lines))  # fmt: skip
        report = {"max_length": max_length, "sides": lines, "left_out": dict(self.left_out)}
        (run / "truncation.json").write_text(json.dumps(report, indent=2))

    def collate(self, items: Sequence[EncodedSteps], model: RewardModel) -> StepBatch:
        spec = model.spec
        return collate_steps(items, spec.pad_token_id, spec.padding_side, self.config.last_step_only)

    def loss(self, scores: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(step_logits(scores, batch), batch.label)

    def accuracy(self, scores: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        return ((step_logits(scores, batch) > 0).float() == batch.label).float().mean()

    def units(self, batch: StepBatch) -> int:
        return len(batch.label)

    def evaluate(self, run: Path, model: RewardModel, builder: InputBuilder, device: torch.device,
                 examples: Sequence[StepwiseExample], items: Sequence[EncodedSteps]) -> None:  # fmt: skip
        probabilities = step_probabilities(model, items, device)
        result = step_metrics([i.example for i in items], probabilities)
        print(format_step_metrics(result), flush=True)
        write_json(result, run / "step_eval.json")


def step_probabilities(
    model: RewardModel, items: Sequence[EncodedSteps], device: torch.device, batch_size: int = 16
) -> list[np.ndarray]:
    """P(right) of every step read, per solution, in the order of `items`."""
    return [1 / (1 + np.exp(-logits)) for logits in step_logit_rows(model, items, device, batch_size)]


@torch.no_grad()
def step_logit_rows(
    model: RewardModel, items: Sequence[EncodedSteps], device: torch.device, batch_size: int = 16
) -> list[np.ndarray]:
    """The logit of P(right) of every step read, per solution, in the order of `items`."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = [np.empty(0)] * len(items)
    order = sorted(range(len(items)), key=lambda i: items[i].tokens)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate_steps([items[i] for i in chunk], model.spec.pad_token_id, model.spec.padding_side,
                              last_step_only=False).to(device)  # fmt: skip
        logits = step_logits(model(batch.input_ids, batch.attention_mask).float(), batch).cpu().numpy()
        rows = batch.row.cpu().numpy()
        for local, index in enumerate(chunk):
            out[index] = logits[rows == local].astype(np.float64)
    model.train(was_training)
    return out
