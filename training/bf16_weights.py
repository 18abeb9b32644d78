"""A bundle's bf16 weights (format 1.5): what the torch backend serves in bf16 without the training checkpoint.

One safetensors file: the backbone's floating-point weights in bfloat16, the score head's in fp32 (RewardModel runs
its head in fp32), and the backbone's transformers config in the file's metadata, so the file alone rebuilds the
model; the bundle's manifest gives its spec and its tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from transformers import AutoConfig, AutoModel, PreTrainedModel

from arbiter.bundle.manifest import ModelSpec
from arbiter.training.model import RewardModel

BF16_FILE = "model.bf16.safetensors"


def save_bf16(model: RewardModel, folder: Path) -> Path:
    backbone = model.backbone
    if not isinstance(backbone, PreTrainedModel):
        raise TypeError("bf16 weights are written from a plain transformers backbone (LoRA merged, as export loads it)")
    tensors = {
        f"backbone.{k}": v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in backbone.state_dict().items()
    }
    tensors |= {f"head.{k}": v.float() for k, v in model.head.state_dict().items()}
    target = folder / BF16_FILE
    # safetensors' save_file creates the file readable by its owner only; a bundle is read by the serving image's
    # own user (uid 10001) from a mounted folder, so the bytes are written as every other bundle file is (umask)
    metadata = {"config": backbone.config.to_json_string()}
    target.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))
    return target


def load_bf16(path: Path, spec: ModelSpec) -> RewardModel:
    """The model in `path`, its backbone in bfloat16 and its head in fp32, in eval mode on the CPU."""
    with safe_open(str(path), framework="pt") as file:
        config = json.loads(file.metadata()["config"])
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open is no mapping)
    backbone = AutoModel.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16)
    model = RewardModel(backbone, spec)
    model.load_state_dict(tensors)
    model.head.float()
    return model.eval()
