"""Everything a training run needs, in one typed object: read from YAML, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from arbiter.data.sources import SourceSpec

Pooling = Literal["auto", "first_token", "last_token", "mean"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    objective: Literal["preference", "prm"] = Field(
        "preference",
        description="preference: a Bradley-Terry reward model on preference data; prm: a process reward model on "
        "stepwise data (a score per step, per-step binary cross-entropy)",
    )
    data: list[SourceSpec] = Field(default_factory=list, description="training sources (repeat the flag)")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of prompts held out for evaluation")
    max_groups_per_source: int | None = Field(None, description="cap per source, for quick runs")
    balance_sources: bool = Field(
        False, description="resample each source's training side to the largest one's size (after weights)"
    )
    base_model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="backbone: hub id, folder or .gguf")
    architecture: Literal["auto", "encoder", "decoder"] = "auto"
    chat_template: Literal["auto", "none"] = Field("auto", description="'none' forces the plain template")
    padding_side: Literal["auto", "left", "right"] = "auto"
    max_length: int = Field(256, gt=8, description="tokens per prompt+response; the prompt is cut from the left")
    pooling: Pooling = Field(
        "auto",
        description="auto: a sentence encoder's own pooling (mean for MiniLM), else first (encoder) or last token",
    )
    step_token: str = Field(
        "<step>",
        description="prm: the token that ends every step (added to the tokenizer when it has none; Qwen2.5-Math-PRM "
        "uses <extra_0>)",
    )
    last_step_only: bool = Field(
        False, description="prm: learn from each solution's last step label only (TRL's train_on_last_step_only)"
    )
    freeze_layers: int = Field(0, ge=0, description="freeze the embeddings and this many lower transformer blocks")
    cache_frozen: bool = Field(
        True, description="with freeze_layers: run the frozen blocks once per sequence and replay their output"
    )
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, description="stop after this many optimizer steps")
    batch_size: int = Field(16, gt=0, description="prompt groups per micro-batch, per process")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(5e-5, gt=0)
    head_lr: float | None = Field(None, gt=0, description="learning rate of the new score head (default: lr)")
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay ends at lr * this")
    max_grad_norm: float = 1.0
    use_margin: bool = Field(True, description="subtract the data's margin inside the loss (Llama 2)")
    margin_scale: float = 1.0
    use_strength: bool = Field(False, description="train on preference_strength as a soft label")
    center_coef: float = Field(0.0, ge=0, description="reward centering: coef * mean((r_c + r_r)^2)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    lora_r: int = Field(0, ge=0, description="LoRA rank; 0 trains the full backbone")
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False
    seed: int = 0
    eval_every: int = Field(0, ge=0, description="evaluate every N steps (0: only at the end)")
    log_every: int = Field(10, gt=0)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    out: Path = Field(Path("runs/latest"), description="the run folder")
    name: str = Field("reward-model", description="model name written into the bundle")

    @model_validator(mode="after")
    def _one_way_to_train_part(self) -> TrainConfig:
        if self.freeze_layers and self.lora_r:
            raise ValueError("freeze_layers and lora_r are two ways to train part of the model: choose one")
        return self

    @classmethod
    def from_yaml(cls, path: Path, **overrides: object) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(raw)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
