"""Scoring (prompt, response) pairs with a torch RewardModel: for evaluation during training and ONNX parity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from arbiter.bundle.render import InputBuilder, Prompt, pad_batch, score_by_length
from arbiter.training.checkpoint import load_checkpoint
from arbiter.training.model import RewardModel


class TorchScorer:
    def __init__(self, model: RewardModel, builder: InputBuilder, device: torch.device, batch_size: int = 32) -> None:
        self.model, self.builder, self.device, self.batch_size = model, builder, device, batch_size

    @classmethod
    def from_checkpoint(cls, folder: Path, device: torch.device) -> TorchScorer:
        model, tokenizer = load_checkpoint(folder)
        return cls(model.to(device).eval(), model.input_builder(tokenizer), device)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        return self.score_ids([e.ids for e in self.builder.encode_many(prompts, responses)])

    @torch.no_grad()
    def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            return score_by_length(sequences, self.batch_size, self.run)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def run(self, sequences: list[Sequence[int]]) -> np.ndarray:
        """One padded batch through the model; the caller chooses the batch."""
        spec = self.model.spec
        ids, mask = pad_batch(sequences, spec.pad_token_id, spec.padding_side)
        scores = self.model(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return scores.float().cpu().numpy()

    def run_rows(self, sequences: list[Sequence[int]]) -> np.ndarray:
        return self.run(sequences)[:, None]  # a trained model has one objective
