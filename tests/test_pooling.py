"""Pooling is right for encoders and decoders whatever the padding side, including pad == eos."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from arbiter.bundle.render import pad_batch
from arbiter.training.model import build_reward_model

ITEMS = [
    ("What is the capital of France?", "Paris."),
    (
        [{"role": "user", "content": "Say something kind."}],
        "You are doing great, and your work matters a lot.",
    ),
    ("Short?", "A much longer answer that runs on for quite a few tokens so padding is needed elsewhere."),
]


ENCODER, DECODER = "sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M-Instruct"


@functools.cache
def load(name: str):
    torch.manual_seed(0)
    model, tokenizer = build_reward_model(name, max_length=128)
    return model.eval(), model.input_builder(tokenizer)


@pytest.fixture(scope="module", params=[ENCODER, DECODER])
def model_and_builder(request):
    return load(request.param)


def test_architecture_and_pooling_detected(model_and_builder):
    model, _ = model_and_builder
    if model.spec.model_type == "bert":
        assert (model.spec.architecture, model.spec.pooling, model.spec.rendering.kind) == (
            "encoder",
            "mean",  # all-MiniLM-L6-v2 is a mean-pooling sentence encoder
            "plain",
        )
    else:
        assert (model.spec.architecture, model.spec.pooling, model.spec.rendering.kind) == (
            "decoder",
            "last_token",
            "chat_template",
        )


@torch.no_grad()
def test_same_score_alone_and_under_left_or_right_padding(model_and_builder):
    model, builder = model_and_builder
    sequences = [builder.encode(p, r).ids for p, r in ITEMS]
    alone = torch.stack([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in sequences])
    longest = max(len(s) for s in sequences)
    # 32: the torch backend's bf16 batches on a CPU, padded past their longest sequence (fewer oneDNN shapes)
    for side, multiple in itertools.product(("left", "right"), (1, 32)):
        ids, mask = pad_batch(sequences, model.spec.pad_token_id, side, multiple)
        assert ids.shape[1] == (longest if multiple == 1 else -(-longest // 32) * 32) and mask.sum() == sum(
            len(s) for s in sequences
        )
        batched = model(torch.from_numpy(ids), torch.from_numpy(mask))
        assert torch.allclose(batched, alone, atol=1e-4), (side, multiple, batched, alone)


@torch.no_grad()
def test_pad_equal_to_eos_inside_the_text():
    """The classic bug: finding the last token by searching for pad ids stops at the first eos in the text."""
    model, builder = load(DECODER)
    assert model.spec.pad_token_id == builder.tokenizer.token_to_id("<|im_end|>")  # pad == eos here
    sequence = builder.encode("Hi", "Hello there, friend.").ids
    assert sequence.count(model.spec.pad_token_id) >= 2  # eos closes each chat turn inside the text
    short = builder.encode("Hi", "Yo").ids
    alone = model(torch.tensor([sequence]), torch.ones(1, len(sequence), dtype=torch.long))
    ids, mask = pad_batch([sequence, short], model.spec.pad_token_id, "right")
    assert torch.allclose(model(torch.from_numpy(ids), torch.from_numpy(mask))[0], alone[0], atol=1e-4)
    # The score depends on the last real token, not on the first eos.
    truncated_at_first_eos = sequence[: sequence.index(model.spec.pad_token_id) + 1]
    first = model(torch.tensor([truncated_at_first_eos]), torch.ones(1, len(truncated_at_first_eos), dtype=torch.long))
    assert not torch.allclose(first, alone, atol=1e-3)
