"""Scoring (prompt, response) pairs with a torch RewardModel: for evaluation during training and ONNX parity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from arbiter.bundle.render import InputBuilder, Prompt, pad_batch, score_by_length
from arbiter.training.checkpoint import load_checkpoint
from arbiter.training.model import RewardModel

TORCH_PRECISIONS = {torch.float32: "fp32", torch.bfloat16: "bf16"}


class TorchScorer:
    def __init__(
        self,
        model: RewardModel,
        builder: InputBuilder,
        device: torch.device,
        batch_size: int = 32,
        pad_multiple: int = 1,
    ) -> None:
        if model.spec.steps is not None:
            raise ValueError(
                "a process reward model (a score per step) is not scored as one reward per response: serving and "
                "exporting PRMs is not built yet; `arbiter train --objective prm` evaluates it per step"
            )
        self.model, self.builder, self.device, self.batch_size = model, builder, device, batch_size
        self.pad_multiple = pad_multiple  # batches padded to a multiple of this many tokens (see pad_batch)

    @property
    def precision(self) -> str:
        """As /v1/models shows it: fp32-torch, or bf16-torch for a model cast to bfloat16."""
        return f"{TORCH_PRECISIONS[next(self.model.backbone.parameters()).dtype]}-torch"

    @classmethod
    def from_checkpoint(
        cls, folder: Path, device: torch.device, dtype: torch.dtype = torch.float32, pad_multiple: int = 1
    ) -> TorchScorer:
        """`dtype` bfloat16 casts the backbone; the head stays fp32 (see RewardModel.forward)."""
        model, tokenizer = load_checkpoint(folder)
        model.to(device, dtype).head.float()
        return cls(model.eval(), model.input_builder(tokenizer), device, pad_multiple=pad_multiple)

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
        ids, mask = pad_batch(sequences, spec.pad_token_id, spec.padding_side, self.pad_multiple)
        scores = self.model(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return scores.float().cpu().numpy()

    def run_rows(self, sequences: list[Sequence[int]]) -> np.ndarray:
        return self.run(sequences)[:, None]  # a trained model has one objective
