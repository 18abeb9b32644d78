"""Rendering and truncation: identical to transformers' chat templates; the prompt is cut, not the response."""

from __future__ import annotations

import pytest

from arbiter.bundle.manifest import Rendering
from arbiter.bundle.render import InputBuilder, TemplateRenderer, render_plain
from arbiter.training.backbones import resolve
from arbiter.training.model import load_tokenizer, rendering_for

CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]


@pytest.fixture(scope="module")
def smol():
    return load_tokenizer(resolve("HuggingFaceTB/SmolLM2-135M-Instruct"))


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer(resolve("sentence-transformers/all-MiniLM-L6-v2"))


def test_chat_template_matches_transformers(smol):
    renderer = TemplateRenderer(rendering_for(smol, "auto"))
    head, tail = renderer.split(CONVERSATION, "Why did the chicken cross the road?")
    reference = smol.apply_chat_template(
        [*CONVERSATION, {"role": "assistant", "content": "Why did the chicken cross the road?"}],
        tokenize=False,
    )
    assert head + tail == reference
    assert head == smol.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)


def test_plain_template_is_documented_form():
    assert render_plain(CONVERSATION) == (
        "Human: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke.\n\nAssistant:"
    )
    assert render_plain("2+2?") == "Human: 2+2?\n\nAssistant:"


def test_truncation_keeps_response_and_cuts_prompt_from_the_left(minilm):
    builder = InputBuilder(minilm.backend_tokenizer, Rendering(kind="plain"), max_length=24)
    prompt = " ".join(f"word{i}" for i in range(40))
    encoded = builder.encode(prompt, "final answer here")
    assert encoded.truncated and len(encoded.ids) == 24
    text = minilm.decode(encoded.ids)
    assert text.startswith("[CLS]") and text.endswith("final answer here [SEP]")
    assert "word39 assistant : final" in text and "human" not in text and "word0 " not in text
    short = builder.encode("hi", "ok")
    assert not short.truncated and minilm.decode(short.ids) == "[CLS] human : hi assistant : ok [SEP]"


def test_overlong_response_keeps_its_start(minilm):
    builder = InputBuilder(minilm.backend_tokenizer, Rendering(kind="plain"), max_length=12)
    encoded = builder.encode("prompt", " ".join(["word"] * 30))
    assert encoded.truncated and len(encoded.ids) == 12 and minilm.decode(encoded.ids).startswith("[CLS] word")


def test_builder_ignores_padding_and_truncation_saved_in_the_tokenizer(minilm):
    backend = minilm.backend_tokenizer
    backend.enable_padding(length=64)
    backend.enable_truncation(8)
    builder = InputBuilder(backend, Rendering(kind="plain"), max_length=32)
    assert len(builder.encode("a b c d e f g h i j", "ok").ids) == 17
    backend.no_padding()
    backend.no_truncation()
