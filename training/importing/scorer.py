"""A reward model trained elsewhere, wrapped to score the way Arbiter's graphs do: (input_ids, attention_mask) in,
the score and every objective's output out, the same for any batch and padding as for one unpadded text.

Each wrapper keeps the original model's own reading of the sequence:
- encoders run their whole *ForSequenceClassification forward (BERT's pooler on [CLS], RoBERTa's head on <s>,
  DeBERTa's context pooler, ModernBERT's mean or CLS pooling): padding is on the right, where their absolute or
  relative positions do not see it;
- decoders run their backbone with positions counted over real tokens (so left padding changes nothing) and read
  the head at the token the original reads: transformers takes the last token that is not `pad_token_id` (under
  pad == eos that skips a trailing eos, as the model was trained), OpenRLHF the last token the mask covers.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedModel


class ImportedRewardModel(nn.Module):
    """forward(input_ids, attention_mask) -> logits [batch, labels], one column per objective."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        head: nn.Module | None,
        pooling: Literal["classifier", "last_non_pad", "last_token"],
        pad_token_id: int | None,
        score_index: int = 0,
    ) -> None:
        super().__init__()
        self.backbone, self.head, self.pooling = backbone, head, pooling
        self.pad_token_id, self.score_index = pad_token_id, score_index

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "classifier":
            logits: torch.Tensor = self.backbone(input_ids=input_ids, attention_mask=attention_mask).logits
            return logits
        assert self.head is not None, "decoders are read through their head"
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
        values: torch.Tensor = self.head(hidden.last_hidden_state)
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        real = attention_mask.bool()
        readable = (
            real
            if self.pooling == "last_token" or self.pad_token_id is None
            else real & (input_ids != self.pad_token_id)
        )
        index = torch.where(readable, steps, -1).amax(-1)
        # Every token a pad id: transformers' argmax over zeros reads position 0 of the unpadded text.
        first = torch.where(real, steps, input_ids.shape[1]).amin(-1)
        index = torch.where(index < 0, first, index)
        return values[torch.arange(input_ids.shape[0], device=input_ids.device), index]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(input_ids, attention_mask).float()
        return logits[:, self.score_index], logits
