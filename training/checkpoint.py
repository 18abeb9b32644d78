"""A training checkpoint: the backbone in transformers' format, the score head, the tokenizer and the spec."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from arbiter.bundle.manifest import ModelSpec
from arbiter.training.model import RewardModel, load_tokenizer

SPEC_FILE = "model_spec.json"


def save_checkpoint(model: RewardModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    backbone = model.backbone
    # LoRA (peft's PeftModel around the transformers model): fold the adapters into the weights for export.
    plain = backbone if isinstance(backbone, PreTrainedModel) else backbone.merge_and_unload()
    plain.save_pretrained(folder / "backbone")
    tokenizer.save_pretrained(folder / "backbone")
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(folder / "head.safetensors"))
    (folder / SPEC_FILE).write_text(model.spec.model_dump_json(indent=2))


def load_checkpoint(folder: Path) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    folder = Path(folder)
    if not (folder / SPEC_FILE).is_file():
        raise FileNotFoundError(f"{folder}: not a training checkpoint (no {SPEC_FILE})")
    spec = ModelSpec.model_validate_json((folder / SPEC_FILE).read_text())
    backbone = AutoModel.from_pretrained(folder / "backbone", dtype=torch.float32)
    model = RewardModel(backbone, spec)
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    return model.eval(), load_tokenizer(str(folder / "backbone"))
