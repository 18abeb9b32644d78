"""Rendering and truncation: identical to transformers' chat templates; the prompt is cut, not the response."""

from __future__ import annotations

import random
import re

import pytest

from arbiter.bundle import load_bundle
from arbiter.bundle.manifest import Rendering
from arbiter.bundle.render import Encoded, InputBuilder, TemplateRenderer, render_plain
from arbiter.errors import InvalidInput
from arbiter.training.model import load_tokenizer, rendering_for
from arbiter.weights import resolve

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


# What a cut piece can get wrong at its edge: contractions, runs of spaces, special tokens of both tokenizers, words
# longer than WordPiece takes (100 characters), combining accents, digits, CJK, emoji, newlines.
HAZARDS = [
    "the",
    "cat",
    "'re",
    "it's",
    "  ",
    " " * 60,
    "\n",
    "\n\n",
    "\t",
    "naïve",
    "cafe\u0301",
    "日本語",
    "12345",
    "!!!",
    "...",
    "<|im_start|>",
    "<|im_end|>",
    "[SEP]",
    "[MASK]",
    "x" * 150,
    "ab" * 60,
    "😀",
    "ß",
    "\u200b",
]


def varied_text(rng, length):
    words, total = [], 0
    while total < length:
        words.append(rng.choice(HAZARDS) + (" " if rng.random() < 0.6 else ""))
        total += len(words[-1])
    return "".join(words)[:length]


def whole(builder, prompt, response):
    """docs/bundle.md's truncation rule over the tokens of the whole text: the slow reference."""
    head, tail = builder.renderer.split(prompt, response)
    prompt_ids, response_ids = (
        builder.tokenizer.encode(t, add_special_tokens=False).ids if t else [] for t in (head, tail)
    )
    budget = builder.max_length - len(builder.head_special) - len(builder.tail_special)
    truncated = len(prompt_ids) + len(response_ids) > budget
    response_cut = len(response_ids) > budget
    if len(response_ids) >= budget:
        prompt_ids, response_ids = [], response_ids[:budget]
    elif truncated:
        prompt_ids = prompt_ids[len(prompt_ids) + len(response_ids) - budget :]
    ids = builder.head_special + prompt_ids + response_ids + builder.tail_special
    return Encoded(ids, truncated, response_cut)


@pytest.fixture(scope="module")
def builders(bundle_dir, smol):
    """The test bundle's own builder (WordPiece, plain) and a byte-level BPE one with a chat template."""
    return {
        "bundle": load_bundle(bundle_dir).input_builder(),
        "smol": InputBuilder(smol.backend_tokenizer, rendering_for(smol, "auto"), max_length=1024),
    }


@pytest.fixture(scope="module")
def long_text():
    return varied_text(random.Random(13), 3_000_000)


@pytest.mark.parametrize("builder_name", ["bundle", "smol"])
@pytest.mark.parametrize("long_part", ["prompt", "response"])
def test_very_long_text_encodes_as_if_tokenized_whole_from_a_piece(builders, long_text, builder_name, long_part):
    builder = builders[builder_name]
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": long_text}]
    prompt, response = (prompt, "It is fine.") if long_part == "prompt" else ("Judge this.", long_text)
    tokenized: list[int] = []
    real = builder.tokenizer

    class Counting:  # the builder's own tokenizer, counting the characters it is given
        def encode(self, text: str, **kwargs):
            tokenized.append(len(text))
            return real.encode(text, **kwargs)

    builder.tokenizer = Counting()
    try:
        encoded = builder.encode(prompt, response)
    finally:
        builder.tokenizer = real
    expected = whole(builder, prompt, response)
    assert encoded == expected and encoded.truncated and len(encoded.ids) == builder.max_length
    assert max(tokenized) < len(long_text) // 100  # only a piece near the kept end was tokenized, not 3 MB


def test_cut_pieces_give_the_whole_texts_ids(builders, smol):
    """Texts about as long as the pieces, cut anywhere among the hazards: a margin too small fails here."""
    cases = [*builders.values(), InputBuilder(smol.backend_tokenizer, rendering_for(smol, "auto"), max_length=12)]
    rng = random.Random(7)
    for _ in range(120):
        builder = rng.choice(cases)
        texts = [varied_text(rng, rng.choice([0, 5, 300, 3000, 20000])) for _ in range(3)]
        if rng.random() < 0.1:  # one word longer than any piece: only the whole text settles it
            texts[rng.randrange(3)] = "y" * 20000
        prompt = (
            texts[0]
            if rng.random() < 0.5
            else [{"role": "user", "content": texts[0]}, {"role": "assistant", "content": texts[1]}]
        )
        assert builder.encode(prompt, texts[2]) == whole(builder, prompt, texts[2])


@pytest.mark.parametrize(
    ("prompt", "response", "problem"),
    [
        ("hi", "ok \ud800", "response is not valid Unicode: lone surrogate at position 3"),
        ("\udfff hi", "ok", "prompt is not valid Unicode: lone surrogate at position 0"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a\ud83d"}],
            "ok",
            "prompt message 1 content is not valid Unicode: lone surrogate at position 1",
        ),
    ],
)
def test_lone_surrogate_is_invalid_input(builders, prompt, response, problem):
    for builder in builders.values():
        with pytest.raises(InvalidInput, match=re.escape(problem)):
            builder.encode(prompt, response)


ALTERNATING = (
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
)


TWO_USER_TURNS = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


@pytest.mark.parametrize(
    ("template", "prompt", "problem"),
    [
        (ALTERNATING, TWO_USER_TURNS, "Conversation roles must alternate"),
        ("{{ messages[1]['content'] }}", "a", "list object has no element 1"),
    ],
)
def test_template_that_refuses_a_prompt_gives_invalid_input(minilm, template, prompt, problem):
    builder = InputBuilder(minilm.backend_tokenizer, Rendering(kind="chat_template", chat_template=template), 64)
    with pytest.raises(InvalidInput, match=f"chat template cannot render this prompt: .*{problem}"):
        builder.encode(prompt, "ok")
    if template == ALTERNATING:
        assert minilm.decode(builder.encode("a", "b").ids) == "[CLS] user : a assistant : b [SEP]"
