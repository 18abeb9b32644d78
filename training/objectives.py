"""What a training run learns, as the loop sees it: how its data loads, encodes and batches, its loss, and how the
run is evaluated at the end. The loop (train.py) is the same for every objective."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from arbiter.bundle.manifest import ModelSpec
from arbiter.bundle.render import InputBuilder
from arbiter.training.batching import Batch, EncodedGroup, collate, encode_groups
from arbiter.training.config import TrainConfig
from arbiter.training.loss import pair_accuracy, preference_loss
from arbiter.training.model import RewardModel
from arbiter.training.report import evaluate_into
from arbiter.training.split import LoadedData, load_preferences
from arbiter.training.torch_scorer import TorchScorer
from arbiter.training.truncation import format_truncation, truncation_report


class Batched(Protocol):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device) -> Batched: ...


class Objective(Protocol):
    unit: str  # what the data teaches, counted in progress and summaries: pairs, steps

    def load(self) -> LoadedData[Any]: ...

    def encode(self, examples: Sequence[Any], builder: InputBuilder, spec: ModelSpec) -> list[Any]: ...

    def report_cuts(self, run: Path, train: Sequence[Any], held_out: Sequence[Any], max_length: int) -> None: ...

    def collate(self, items: Sequence[Any], model: RewardModel) -> Batched: ...

    def loss(self, scores: torch.Tensor, batch: Any) -> torch.Tensor: ...

    def accuracy(self, scores: torch.Tensor, batch: Any) -> torch.Tensor: ...

    def units(self, batch: Any) -> int: ...

    def evaluate(self, run: Path, model: RewardModel, builder: InputBuilder, device: torch.device,
                 examples: Sequence[Any], items: Sequence[Any]) -> None: ...  # fmt: skip


def objective_for(config: TrainConfig) -> Objective:
    if config.objective == "prm":
        from arbiter.training.steps import StepObjective

        return StepObjective(config)
    return PreferenceObjective(config)


class PreferenceObjective:
    """Bradley-Terry over preference groups (pairs, or K-wise rankings), with margins, soft labels and centering."""

    unit = "pairs"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def load(self) -> LoadedData[Any]:
        c = self.config
        return load_preferences(c.data, c.eval_fraction, c.seed, c.max_groups_per_source, c.balance_sources)

    def encode(self, examples: Sequence[Any], builder: InputBuilder, spec: ModelSpec) -> list[EncodedGroup]:
        return encode_groups(examples, builder)

    def report_cuts(self, run: Path, train: Sequence[Any], held_out: Sequence[Any], max_length: int) -> None:
        truncation = {"train": truncation_report(train), "eval": truncation_report(held_out)}
        print(format_truncation(truncation["train"], max_length), flush=True)
        (run / "truncation.json").write_text(json.dumps(truncation, indent=2))

    def collate(self, items: Sequence[EncodedGroup], model: RewardModel) -> Batch:
        c, spec = self.config, model.spec
        return collate(items, spec.pad_token_id, spec.padding_side, c.use_margin, c.use_strength, c.margin_scale)

    def loss(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        return preference_loss(scores, batch.pairs, self.config.center_coef)

    def accuracy(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        return pair_accuracy(scores, batch.pairs)

    def units(self, batch: Batch) -> int:
        return len(batch.pairs.winner)

    def evaluate(self, run: Path, model: RewardModel, builder: InputBuilder, device: torch.device,
                 examples: Sequence[Any], items: Sequence[Any]) -> None:  # fmt: skip
        evaluate_into(run, TorchScorer(model, builder, device), examples)
