"""Process reward models trained elsewhere, in the two layouts vLLM serves, read as Arbiter's PRM graphs read steps:
one logit of P(step right) at every token, read at the step tokens (docs/bundle.md, `model.steps`).

- Math-Shepherd: a causal LM; at each step tag (Math-Shepherd's `ки`) P(right) is the softmax over the LM head's
  logits of a good and a bad token (`+` and `-`), which vLLM's STEP pooler returns (`step_tag_id`,
  `returned_token_ids`). Its logit is l_good - l_bad: only those two rows of the head are kept.
- Two-class head (Qwen2.5-Math-PRM): a head with two outputs, [wrong, right], at every token, read at
  `<extra_0>`; its logit is l_right - l_wrong. transformers' *ForTokenClassification with two labels has this
  layout, and Qwen's own Qwen2ForProcessRewardModel (remote code, not run here) stores a Qwen2 backbone under
  `model.` and a Linear-ReLU-Linear head under `score.`, which are loaded by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification, PreTrainedModel

from arbiter.training.importing.checkpoints import Described, describe_process_model, tensor_of

StepLayout = Literal["math-shepherd", "two-class"]
# One unpadded sequence in, its logit of P(step right) at every token out, as the original's own forward computes it.
StepReference = Callable[[Sequence[int]], np.ndarray]
QWEN_PRM = "Qwen2ForProcessRewardModel"


class ImportedStepModel(nn.Module):
    """forward(input_ids, attention_mask) -> token_scores [batch, tokens]: the logit of P(step right) at every token,
    the same for any batch and padding as for one unpadded text (decoder positions count real tokens only)."""

    def __init__(self, backbone: PreTrainedModel, head: nn.Module, decoder: bool) -> None:
        super().__init__()
        self.backbone, self.head, self.decoder = backbone, head, decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0)} if self.decoder else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        wrong_right: torch.Tensor = self.head(hidden).float()
        return wrong_right[..., 1] - wrong_right[..., 0]


@dataclass
class ImportedStepCheckpoint:
    model: ImportedStepModel
    described: Described
    layout: StepLayout
    reference: StepReference


def _rows(linear: nn.Module, rows: Sequence[int]) -> nn.Linear:
    """A Linear of only `rows` of `linear`'s outputs: the same values, without the rest of a vocabulary."""
    assert isinstance(linear, nn.Linear)
    out = nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None)
    out.weight.data.copy_(linear.weight.data[list(rows)].float())
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.data[list(rows)].float())
    return out


def load_step_model(checkpoint: str, good_token: str, bad_token: str) -> ImportedStepCheckpoint:
    """The PRM at `checkpoint`, its layout read from its config's architectures; fp32, in eval mode."""
    described = describe_process_model(checkpoint)
    architectures = described.source.architectures
    decoder = described.architecture == "decoder"
    path = described.path
    if any(a.endswith("ForCausalLM") for a in architectures):
        lm: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        ids = [_one_token(described, t, flag) for t, flag in ((bad_token, "--bad-token"), (good_token, "--good-token"))]
        head = _rows(lm.get_output_embeddings(), ids)
        wrapped = ImportedStepModel(getattr(lm, lm.base_model_prefix), head, decoder).eval()

        @torch.no_grad()
        def causal(sequence: Sequence[int]) -> np.ndarray:
            logits = lm(input_ids=torch.tensor([list(sequence)])).logits[0].double()
            return (logits[:, ids[1]] - logits[:, ids[0]]).numpy()

        return ImportedStepCheckpoint(wrapped, described, "math-shepherd", causal)
    if any(a.endswith("ForTokenClassification") for a in architectures):
        classifier: PreTrainedModel = AutoModelForTokenClassification.from_pretrained(path, dtype=torch.float32).eval()
        if classifier.config.num_labels != 2:
            raise ValueError(f"{checkpoint}: a token classifier of {classifier.config.num_labels} labels; a PRM's "
                             "two-class head has two, [wrong, right]")  # fmt: skip
        classes = getattr(classifier, "score", None) or getattr(classifier, "classifier", None)
        if not isinstance(classes, nn.Module):
            raise ValueError(f"{checkpoint}: a token classifier without a score or classifier head")
        backbone = getattr(classifier, classifier.base_model_prefix)
        wrapped = ImportedStepModel(backbone, classes, decoder).eval()

        @torch.no_grad()
        def two_class(sequence: Sequence[int]) -> np.ndarray:
            logits = classifier(input_ids=torch.tensor([list(sequence)])).logits[0].double()
            return (logits[:, 1] - logits[:, 0]).numpy()

        return ImportedStepCheckpoint(wrapped, described, "two-class", two_class)
    if QWEN_PRM in architectures:
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        first, last = (tensor_of(Path(path), f"score.{i}.weight") for i in (0, 2))
        mlp = nn.Sequential(nn.Linear(first.shape[1], first.shape[0]), nn.ReLU(), nn.Linear(last.shape[1], 2))
        for index in (0, 2):
            layer = mlp[index]
            assert isinstance(layer, nn.Linear)
            layer.weight.data.copy_(tensor_of(Path(path), f"score.{index}.weight").float())
            layer.bias.data.copy_(tensor_of(Path(path), f"score.{index}.bias").float())
        wrapped = ImportedStepModel(backbone, mlp, decoder).eval()

        # Qwen's class is remote code, which is not run: the reference is this wrapper on one unpadded sequence,
        # what batching and padding must not change. The tests compare the wrapper with Qwen's forward written out.
        @torch.no_grad()
        def qwen(sequence: Sequence[int]) -> np.ndarray:
            ids = torch.tensor([list(sequence)])
            return wrapped(ids, torch.ones_like(ids))[0].double().numpy()

        return ImportedStepCheckpoint(wrapped, described, "two-class", qwen)
    raise ValueError(
        f"{checkpoint}: not a process reward model arbiter import reads (architectures {architectures or 'unset'}): "
        f"a *ForCausalLM read at a step tag (Math-Shepherd), a *ForTokenClassification of two labels or {QWEN_PRM} "
        "(Qwen2.5-Math-PRM)"
    )


def _one_token(described: Described, text: str, flag: str) -> int:
    ids = described.tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{flag} {text!r} is {len(ids)} tokens of this tokenizer ({ids}); it must be one")
    return int(ids[0])
