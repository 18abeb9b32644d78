"""Turning (prompt, response) into token ids, identically in training and serving.

Training and the server both call `InputBuilder`, over the same `tokenizers.Tokenizer` file that the bundle
carries, so a bundle scores what it was trained on. Truncation keeps the response and cuts the prompt from
the left (the end of a conversation matters most); a response longer than the whole budget is cut at its end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from arbiter.bundle.manifest import Rendering

Message: TypeAlias = dict[str, str]
Prompt: TypeAlias = str | Sequence[Message]

# The plain template, used when a tokenizer has no chat template (documented in docs/bundle.md).
PLAIN_ROLES = {"system": "System", "user": "Human", "assistant": "Assistant"}


def as_messages(prompt: Prompt) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def render_plain(prompt: Prompt) -> str:
    turns = [f"{PLAIN_ROLES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in as_messages(prompt)]
    return "\n\n".join(turns) + "\n\nAssistant:"


def _raise(message: str) -> None:
    raise ValueError(message)


class TemplateRenderer:
    """Renders a prompt and the rendered prompt + response, with the bundle's rendering rule."""

    def __init__(self, rendering: Rendering) -> None:
        self.rendering = rendering
        self._template = None
        if rendering.kind == "chat_template":
            if not rendering.chat_template:
                raise ValueError("rendering.kind is chat_template but no chat_template is given")
            # The same environment transformers' apply_chat_template uses, so templates behave alike.
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.globals["raise_exception"] = _raise
            self._template = env.from_string(rendering.chat_template)

    def _chat(self, messages: list[Message], add_generation_prompt: bool) -> str:
        assert self._template is not None
        context: dict[str, Any] = dict(self.rendering.special_tokens)
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **context)

    def split(self, prompt: Prompt, response: str) -> tuple[str, str]:
        """(prompt part, response part): their concatenation is the full rendered text."""
        if self._template is None:
            return render_plain(prompt), " " + response
        messages = as_messages(prompt)
        head = self._chat(messages, add_generation_prompt=True)
        full = self._chat([*messages, {"role": "assistant", "content": response}], add_generation_prompt=False)
        if full.startswith(head):
            return head, full[len(head) :]
        # Templates whose prompt is not a prefix of the full text: the whole text is cut from the left.
        return full, ""


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    truncated: bool


class InputBuilder:
    def __init__(self, tokenizer: Tokenizer, rendering: Rendering, max_length: int) -> None:
        # A private copy: padding and truncation are done here, not by settings saved in tokenizer.json.
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.renderer = TemplateRenderer(rendering)
        self.max_length = max_length
        self.head_special, self.tail_special = _special_frame(self.tokenizer)

    def encode(self, prompt: Prompt, response: str) -> Encoded:
        head, tail = self.renderer.split(prompt, response)
        head_ids = self.tokenizer.encode(head, add_special_tokens=False).ids if head else []
        tail_ids = self.tokenizer.encode(tail, add_special_tokens=False).ids if tail else []
        budget = self.max_length - len(self.head_special) - len(self.tail_special)
        truncated = len(head_ids) + len(tail_ids) > budget
        if len(tail_ids) >= budget:
            head_ids, tail_ids = [], tail_ids[:budget]
        elif truncated:
            head_ids = head_ids[len(head_ids) + len(tail_ids) - budget :]
        return Encoded(self.head_special + head_ids + tail_ids + self.tail_special, truncated)

    def encode_many(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Encoded]:
        return [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]


def _special_frame(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer's post-processor puts before and after a single sequence."""
    bare = tokenizer.encode("a", add_special_tokens=False).ids
    framed = tokenizer.encode("a", add_special_tokens=True).ids
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return framed[:start], framed[start + len(bare) :]
    return [], []


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """int64 input_ids and attention_mask, padded to the longest sequence on the given side."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = seq
        mask[row, span] = 1
    return ids, mask


def score_by_length(
    sequences: Sequence[Sequence[int]], batch_size: int, run: Callable[[list[Sequence[int]]], np.ndarray]
) -> np.ndarray:
    """Score sequences in batches of similar length (less padding); results come back in input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = np.empty(len(sequences), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        out[chunk] = run([sequences[i] for i in chunk])
    return out
