"""Training only the top of a network: the frozen lower layers run once per sequence, and their output is replayed.

On CPU cores a backward pass costs several forward passes. Freezing the embeddings and the lower blocks removes their
share of the backward pass, and caching what they compute removes their forward pass from every later epoch, so the
top blocks can train for several epochs in the time one epoch of the whole network takes. The cache keeps each
sequence's hidden states after the last frozen block, for its real tokens only, in float16: half of float32's
memory, with a rounding error (about 5e-4 relative) far below the dropout noise the top blocks train under.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from arbiter.bundle.render import pad_batch
from arbiter.training.model import RewardModel

CACHE_DTYPE = torch.float16


def layer_stack(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's list of transformer blocks (BERT's encoder.layer, Llama's layers, ...)."""
    count = getattr(getattr(backbone, "config", None), "num_hidden_layers", None)
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"{type(backbone).__name__}: no list of {count} transformer blocks to freeze the bottom of")


def freeze_lower(backbone: nn.Module, layers: int) -> None:
    """Freeze the embeddings and the first `layers` blocks; the blocks above them and any final norm still train."""
    stack = layer_stack(backbone)
    if not 0 < layers < len(stack):
        raise ValueError(f"freeze_layers must be between 1 and {len(stack) - 1} for this backbone, not {layers}")
    in_stack = {id(p) for p in stack.parameters()}
    for name, param in backbone.named_parameters():
        if id(param) not in in_stack and "embed" in name:
            param.requires_grad_(False)
    for block in stack[:layers]:
        block.requires_grad_(False)


class _PassThrough(nn.Module):
    """Stands in for a frozen block whose output the cache already holds: returns its input as it came."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        # Some models read per-block attributes in their loop (Qwen3, Gemma: which mask a block takes).
        if hasattr(original, "attention_type"):
            self.attention_type = original.attention_type

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return hidden_states


class _Replay(_PassThrough):
    """Stands in for the last frozen block: returns the cached states of the batch."""

    def __init__(self, original: nn.Module, states: torch.Tensor, as_tuple: bool) -> None:
        super().__init__(original)
        self.states, self.as_tuple = states, as_tuple

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        states = self.states.to(hidden_states.dtype)
        return (states,) if self.as_tuple else states  # type: ignore[return-value]


class LowerStates:
    """Replays what the frozen blocks computed; each sequence's states are one (tokens, hidden) float16 tensor."""

    def __init__(self, model: RewardModel, layers: int, as_tuple: bool) -> None:
        self.model, self.layers, self.as_tuple = model, layers, as_tuple

    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        model: RewardModel,
        layers: int,
        sequences: Sequence[Sequence[int]],
        batch_tokens: int = 8192,
        progress: bool = False,
    ) -> tuple[LowerStates, list[torch.Tensor]]:
        """Run the frozen part alone (the blocks above it are skipped) over every sequence, in length-sorted batches."""
        stack = layer_stack(model.backbone)
        captured: list[torch.Tensor | tuple[torch.Tensor, ...]] = []
        hook = stack[layers - 1].register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        above = list(stack[layers:])
        for i, block in enumerate(above):
            stack[layers + i] = _PassThrough(block)
        was_training = model.training
        model.eval()
        device = model.head.weight.device
        spec = model.spec
        states: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        as_tuple = False
        bar = tqdm(total=len(sequences), desc="frozen blocks", unit="seq", disable=not progress, dynamic_ncols=True)
        try:
            order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
            start = 0
            while start < len(order):
                # the batch's longest sequence is its last: as many as fit in batch_tokens at that width
                count = 1
                while start + count < len(order) and (count + 1) * len(sequences[order[start + count]]) <= batch_tokens:
                    count += 1
                chosen = order[start : start + count]
                ids, mask = pad_batch([sequences[i] for i in chosen], spec.pad_token_id, spec.padding_side)
                captured.clear()
                model(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
                output = captured[0]
                as_tuple = isinstance(output, tuple)
                hidden = (output[0] if isinstance(output, tuple) else output).to(CACHE_DTYPE).cpu()
                real = torch.from_numpy(mask.astype(bool))
                for row, index in enumerate(chosen):
                    states[index] = hidden[row, real[row]].clone()
                start += count
                bar.update(count)
        finally:
            bar.close()
            hook.remove()
            for i, block in enumerate(above):
                stack[layers + i] = block
            model.train(was_training)
        return cls(model, layers, as_tuple), states

    def padded(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """The cached states of a batch, padded with zeros on the side pad_batch pads the ids."""
        width = max(len(s) for s in states)
        out = torch.zeros(len(states), width, states[0].shape[-1], dtype=CACHE_DTYPE)
        for row, s in enumerate(states):
            if self.model.spec.padding_side == "right":
                out[row, : len(s)] = s
            else:
                out[row, width - len(s) :] = s
        return out

    @contextlib.contextmanager
    def replayed(self, states: torch.Tensor) -> Iterator[None]:
        """Inside, the model's frozen blocks are replaced by `states` (batch, tokens, hidden) of its next batch."""
        stack = layer_stack(self.model.backbone)
        originals = list(stack[: self.layers])
        for i in range(self.layers - 1):
            stack[i] = _PassThrough(originals[i])
        stack[self.layers - 1] = _Replay(originals[-1], states, self.as_tuple)
        try:
            yield
        finally:
            for i, block in enumerate(originals):
                stack[i] = block
