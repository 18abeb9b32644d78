"""Reading reward models trained elsewhere: which format a folder (or hub id) is, and the model in it, with the
original code's own forward kept beside it as the reference that the bundle must match.

Formats:
- transformers: a *ForSequenceClassification checkpoint, with one label or several (named objectives). TRL's
  RewardTrainer writes this format, and so do most downloaded reward models (Skywork-Reward, the RewardBench
  leaders, DeBERTa/RoBERTa classifiers).
- openrlhf: OpenRLHF's save path: the backbone's weights under its base-model prefix, a bias-free value head
  under `value_head_prefix` (in config.json), and `normalize_reward`, `mean` and `std` in config.json.
- a PEFT adapter (adapter_config.json) over either: merged into its base at import.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from arbiter import weights
from arbiter.bundle.manifest import Source
from arbiter.training.importing.scorer import ImportedRewardModel
from arbiter.training.model import detect_architecture, load_tokenizer

ADAPTER_CONFIG = "adapter_config.json"
OPENRLHF_CLASSES = {"RewardModel"}
# One unpadded sequence in, that sequence's logits (one per objective) out, as the original code computes them.
Reference = Callable[[Sequence[int]], np.ndarray]


@dataclass
class ImportedCheckpoint:
    model: ImportedRewardModel
    described: Described
    reference: Reference
    normalization: tuple[float, float] | None  # (mean, std) that the checkpoint's config says to apply


@dataclass
class Described:
    """What a checkpoint is, read from its config and tokenizer alone (no weights): enough for a remote bundle."""

    path: str
    adapter: str | None
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    source: Source
    architecture: Literal["encoder", "decoder"]
    labels: list[str]
    pooling: Literal["classifier", "last_non_pad", "last_token"]


def describe_process_model(checkpoint: str) -> Described:
    """A process reward model's config and tokenizer (step_models.py reads its layout from the architectures)."""
    path = weights.resolve(checkpoint)
    if (Path(path) / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{path}: a PEFT adapter; merge it into its process reward model first, then import that")
    config = AutoConfig.from_pretrained(path)
    architectures = list(getattr(config, "architectures", None) or [])
    source = Source(format="transformers", checkpoint=checkpoint, architectures=architectures)
    architecture: Literal["encoder", "decoder"] = "encoder" if detect_architecture(config) == "encoder" else "decoder"
    return Described(path, None, config, load_tokenizer(path), source, architecture, ["right"], "last_token")


def describe(checkpoint: str) -> Described:
    path = weights.resolve(checkpoint)
    adapter: str | None = None
    if (Path(path) / ADAPTER_CONFIG).is_file():
        adapter = path
        base = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path}: {ADAPTER_CONFIG} names no base_model_name_or_path to merge the adapter into")
        path = weights.resolve(base)
    config = AutoConfig.from_pretrained(path)
    architectures = list(getattr(config, "architectures", None) or [])
    tokenizer = load_tokenizer(adapter if adapter and _has_tokenizer(adapter) else path)
    source = Source(format="transformers", checkpoint=checkpoint, adapter=adapter, architectures=architectures)
    architecture: Literal["encoder", "decoder"] = "encoder" if detect_architecture(config) == "encoder" else "decoder"
    if getattr(config, "value_head_prefix", None) or OPENRLHF_CLASSES & set(architectures):
        if adapter:
            raise ValueError(
                f"{adapter}: a PEFT adapter over an OpenRLHF reward model holds no value head of its own; "
                "merge it with OpenRLHF's lora_combiner first, then import the merged folder"
            )
        if architecture != "decoder":
            raise ValueError(f"{path}: an OpenRLHF reward model over an encoder ({config.model_type}) is not supported")
        openrlhf = source.model_copy(update={"format": "openrlhf"})
        return Described(path, None, config, tokenizer, openrlhf, "decoder", ["reward"], "last_token")
    if adapter is None and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"{checkpoint}: not a reward model (its config's architectures are {architectures or 'unset'}). "
            "arbiter import takes *ForSequenceClassification checkpoints (TRL's RewardTrainer, most downloaded "
            "reward models), OpenRLHF reward models and PEFT adapters over them; to make a reward model from this "
            "backbone, use arbiter train"
        )
    names: dict[int, str] = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    count = _adapter_labels(adapter) if adapter else int(config.num_labels or 1)
    labels = [names.get(i, f"LABEL_{i}") for i in range(count)]
    pooling: Literal["classifier", "last_non_pad"] = "classifier" if architecture == "encoder" else "last_non_pad"
    return Described(path, adapter, config, tokenizer, source, architecture, labels, pooling)


def load_imported(checkpoint: str, objective: str | None = None) -> ImportedCheckpoint:
    """The model at `checkpoint` (a folder, hub id or alias) wrapped for export; fp32, in eval mode."""
    described = describe(checkpoint)
    if described.source.format == "openrlhf":
        return _openrlhf(described)
    return _transformers(described, objective_index(described.labels, objective))


def _has_tokenizer(folder: str) -> bool:
    return (Path(folder) / "tokenizer.json").is_file() or (Path(folder) / "tokenizer_config.json").is_file()


def _transformers(described: Described, index: int) -> ImportedCheckpoint:
    path, adapter = described.path, described.adapter
    # Typed Any: from_pretrained's keyword arguments are a union that an int does not satisfy in every stub version.
    extra: dict[str, Any] = {"num_labels": len(described.labels)} if adapter else {}
    model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, **extra)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    pad_id = getattr(model.config.get_text_config(), "pad_token_id", None)
    if described.architecture == "encoder":
        wrapped = ImportedRewardModel(model, None, "classifier", pad_id, index)
    else:
        head = getattr(model, "score", None)
        if not isinstance(head, nn.Module):
            raise ValueError(f"{path}: a decoder classifier without a `score` head ({type(model).__name__})")
        backbone = getattr(model, model.base_model_prefix)
        wrapped = ImportedRewardModel(backbone, head, "last_non_pad", pad_id, index)

    @torch.no_grad()
    def reference(ids: Sequence[int]) -> np.ndarray:
        logits = model(input_ids=torch.tensor([list(ids)])).logits[0]
        return logits.float().numpy().astype(np.float64)

    return ImportedCheckpoint(wrapped.eval(), described, reference, None)


def _openrlhf(described: Described) -> ImportedCheckpoint:
    path, config = described.path, described.config
    prefix = str(getattr(config, "value_head_prefix", None) or "score")
    backbone = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    weight = tensor_of(Path(path), f"{prefix}.weight")
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    head.weight.data.copy_(weight.float())
    wrapped = ImportedRewardModel(backbone, head, "last_token", None).eval()
    normalization = None
    if getattr(config, "normalize_reward", False) and hasattr(config, "mean") and hasattr(config, "std"):
        normalization = (float(config.mean), float(config.std))

    # OpenRLHF's forward cannot run without its GPU stack (deepspeed), so the reference is this wrapper on one
    # unpadded sequence: what batching and padding must not change. The tests compare both to OpenRLHF's own class.
    @torch.no_grad()
    def reference(ids: Sequence[int]) -> np.ndarray:
        ones = torch.ones(1, len(ids), dtype=torch.long)
        return wrapped.logits(torch.tensor([list(ids)]), ones)[0].float().numpy().astype(np.float64)

    return ImportedCheckpoint(wrapped, described, reference, normalization)


def objective_index(labels: list[str], objective: str | None) -> int:
    if objective is None:
        return 0
    if objective in labels:
        return labels.index(objective)
    raise ValueError(f"no objective named {objective!r}; the model's labels are {', '.join(labels)}")


def tensor_of(folder: Path, name: str) -> torch.Tensor:
    """One tensor of a checkpoint, from its safetensors file(s) or pytorch_model.bin."""
    index = folder / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text()).get("weight_map", {}) if index.is_file() else {}
    files = [folder / weight_map[name]] if name in weight_map else sorted(folder.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            if name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                return f.get_tensor(name)
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
        if name in state:
            return state[name]
    raise ValueError(f"{folder}: no tensor {name} in the checkpoint (is value_head_prefix right?)")


def _adapter_labels(adapter: str | None) -> int:
    """How many labels the classifier head saved with a PEFT adapter has (modules_to_save: score or classifier)."""
    assert adapter is not None
    heads: dict[str, int] = {}
    for file in sorted(Path(adapter).glob("adapter_model*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                parts = set(key.split("."))
                if (
                    key.endswith(".weight")
                    and parts & {"score", "classifier"}
                    and not parts & {"lora_A", "lora_B", "dense"}
                ):
                    heads[key] = int(f.get_slice(key).get_shape()[0])
    # RoBERTa's head is classifier.dense then classifier.out_proj: the labels are out_proj's rows.
    for key in sorted(heads, key=lambda k: "out_proj" not in k):
        return heads[key]
    raise ValueError(
        f"{adapter}: the adapter saves no classifier head (modules_to_save); it is not a reward model's adapter"
    )
