"""A scalar reward model over any Hugging Face backbone.

Decoders score from the last real token; encoders from the mean of the real tokens when the backbone is a sentence
encoder trained to summarise that way (its sentence-transformers pooling config says so), else from the first token.
Positions come from the attention mask, never from searching for pad ids: that search is the classic bug when
pad == eos, and it breaks under left padding. Decoders also get position ids from the mask, so left padding changes
nothing.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from tokenizers import AddedToken
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from arbiter import weights
from arbiter.bundle.manifest import ModelSpec, Rendering, StepReading
from arbiter.bundle.render import InputBuilder
from arbiter.training.config import Pooling

if TYPE_CHECKING:
    from peft import PeftModel

ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "deberta",
    "deberta-v2",
    "distilbert",
    "electra",
    "mpnet",
    "albert",
    "modernbert",
    "camembert",
    "ernie",
}
SELF_POSITIONED = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text"}


class RewardModel(nn.Module):
    # Declared, so that they are not nn.Module.__getattr__'s Tensor | Module. The backbone is a transformers model,
    # or peft's PeftModel around one once LoRA is on (train.py).
    backbone: PreTrainedModel | PeftModel
    head: nn.Linear
    spec: ModelSpec
    _mask_positions: bool

    def __init__(self, backbone: PreTrainedModel, spec: ModelSpec) -> None:
        super().__init__()
        if getattr(backbone, "pooler", None) is not None:
            # BERT-style poolers feed no score here; unused weights would also break DDP's gradient check.
            # (register_module: what `backbone.pooler = None` does for a submodule, and typed to take None.)
            backbone.register_module("pooler", None)
        self.backbone = backbone
        self.spec = spec
        hidden: int = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        # Positions counted over real tokens make left padding harmless. RoBERTa-style models count them
        # from the input ids themselves (with an offset), so they are left alone.
        self._mask_positions = (
            spec.model_type not in SELF_POSITIONED and "position_ids" in inspect.signature(backbone.forward).parameters
        )
        nn.init.normal_(self.head.weight, std=1 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def input_builder(self, tokenizer: PreTrainedTokenizerBase) -> InputBuilder:
        """The exact input construction the bundle will record (rendering, max length)."""
        return InputBuilder(tokenizer.backend_tokenizer, self.spec.rendering, self.spec.max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {}
        if self._mask_positions:
            extra["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        # pooled and scored at the head's precision: a bf16 backbone under an fp32 head (the torch backend's bf16)
        # sums its tokens in fp32, and its score is not rounded to bf16's 8 bits
        hidden = hidden.to(self.head.weight.dtype)
        if self.spec.steps is not None:  # a process reward model: every position's logit, read at the step tokens
            return self.head(hidden).squeeze(-1)
        if self.spec.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return self.head(pooled).squeeze(-1)
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        real = attention_mask.bool()
        if self.spec.pooling == "first_token":
            # first real token: smallest position whose mask is 1
            index = torch.where(real, positions, attention_mask.shape[1]).amin(-1)
        else:
            index = torch.where(real, positions, -1).amax(-1)
        pooled = hidden.gather(1, index.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
        return self.head(pooled).squeeze(-1)


def default_pooling(path: str, architecture: str) -> Literal["first_token", "last_token", "mean"]:
    """What the backbone was trained to summarise into: a sentence encoder's own pooling config, else its kind's."""
    if architecture == "decoder":
        return "last_token"
    for module in _json_file(path, "modules.json") or []:
        if str(module.get("type", "")).endswith("Pooling"):
            pooling = _json_file(path, f"{module.get('path', '')}/config.json".lstrip("/")) or {}
            if pooling.get("pooling_mode_mean_tokens"):
                return "mean"
    return "first_token"


def _json_file(path: str, name: str) -> Any:
    """A JSON file of a local folder or of a hub repository (cached as from_pretrained caches), or None."""
    found = cached_file(path, name, _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(found).read_text()) if found else None


def detect_architecture(config: object) -> str:
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "decoder"
    return "encoder" if getattr(config, "model_type", "") in ENCODER_TYPES else "decoder"


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: Arbiter needs a fast (tokenizers) tokenizer so the server can load it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def rendering_for(tokenizer: PreTrainedTokenizerBase, chat_template: str) -> Rendering:
    """chat_template: 'auto' uses the tokenizer's own template when it has one, 'none' the plain template."""
    template = tokenizer.chat_template if chat_template == "auto" else None
    if isinstance(template, dict):  # tokenizers with several named templates
        template = template.get("default")
    if not template:
        return Rendering(kind="plain")
    specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    return Rendering(kind="chat_template", chat_template=template, special_tokens=specials)


def build_reward_model(
    base_model: str,
    max_length: int,
    architecture: str = "auto",
    chat_template: str = "auto",
    padding_side: str = "auto",
    dtype: torch.dtype = torch.float32,
    pooling: Pooling = "auto",
    step_token: str | None = None,
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """`step_token`: a process reward model, scored at this token after every step (added when the tokenizer lacks
    it; its embedding starts as transformers' resize makes it, from the others' mean)."""
    path = weights.resolve(base_model)
    config = AutoConfig.from_pretrained(path)
    arch = detect_architecture(config) if architecture == "auto" else architecture
    tokenizer = load_tokenizer(path)
    backbone = AutoModel.from_pretrained(path, dtype=dtype)
    steps = None
    if step_token is not None:
        steps = StepReading(token=step_token, token_id=step_token_id(tokenizer, backbone, step_token))
    spec = ModelSpec(
        base_model=weights.canonical_name(base_model),
        architecture=arch,
        model_type=config.model_type,
        pooling=default_pooling(path, arch) if pooling == "auto" else pooling,
        max_length=min(max_length, getattr(config, "max_position_embeddings", max_length)),
        padding_side=("right" if arch == "encoder" else "left") if padding_side == "auto" else padding_side,
        pad_token_id=tokenizer.pad_token_id,
        rendering=rendering_for(tokenizer, chat_template),
        steps=steps,
    )
    return RewardModel(backbone, spec), tokenizer


def step_token_id(tokenizer: PreTrainedTokenizerBase, backbone: PreTrainedModel, token: str) -> int:
    """The id of the token that ends a step: the tokenizer's own when `token` is one token of it, else a special
    token added to it (and a row added to the backbone's embeddings)."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) == 1 and tokenizer.decode(ids) == token:
        return ids[0]
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
    backbone.resize_token_embeddings(len(tokenizer))
    added = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(added, int)
    return added
