"""Turning (prompt, response) into token ids, identically in training and serving.

Training and the server both call `InputBuilder`, over the same `tokenizers.Tokenizer` file that the bundle
carries, so a bundle scores what it was trained on. Truncation keeps the response and cuts the prompt from
the left (the end of a conversation matters most); a response longer than the whole budget is cut at its end.
Text a client sends and the template cannot take (a lone surrogate, a conversation the template refuses) raises
InvalidInput: it is the caller's to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Encoding, Tokenizer

from arbiter.bundle.manifest import Rendering
from arbiter.errors import InvalidInput

Message: TypeAlias = dict[str, str]
Prompt: TypeAlias = str | Sequence[Message]

# The plain template, used when a tokenizer has no chat template (documented in docs/bundle.md).
PLAIN_ROLES = {"system": "System", "user": "Human", "assistant": "Assistant"}

# A long text is tokenized from a piece of about this many characters per token it must give (grown if that falls
# short), instead of whole: the result is the same and a 3 MB response costs what a short one does.
CHARS_PER_TOKEN = 8
# How close to a piece's cut its tokens may differ from the whole text's (a word, a contraction, a special token
# or a run of spaces cut in two); every word with a token this close to the cut is dropped.
CUT_MARGIN = 64


def as_messages(prompt: Prompt) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def render_plain(prompt: Prompt) -> str:
    turns = [f"{PLAIN_ROLES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in as_messages(prompt)]
    return "\n\n".join(turns) + "\n\nAssistant:"


def _raise(message: str) -> None:
    # What transformers' apply_chat_template raises too; _chat turns it into the caller's error.
    raise TemplateError(message)


def _require_unicode(text: str, where: str) -> None:
    """Refuse a lone surrogate (JSON's "\\ud800" decodes to one): it is not text, and the tokenizer cannot take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{where} is not valid Unicode: lone surrogate at position {exc.start}") from None


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
            try:
                self._template = env.from_string(rendering.chat_template)
            except TemplateError as exc:
                raise ValueError(f"the chat template does not compile: {exc}") from exc

    def _chat(self, messages: list[Message], add_generation_prompt: bool) -> str:
        assert self._template is not None
        context: dict[str, Any] = dict(self.rendering.special_tokens)
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **context)
        except TemplateError as exc:  # raise_exception("Conversation roles must alternate ..."), an undefined, ...
            raise InvalidInput(f"the model's chat template cannot render this prompt: {exc}") from None

    def split(self, prompt: Prompt, response: str) -> tuple[str, str]:
        """(prompt part, response part): their concatenation is the full rendered text."""
        messages = as_messages(prompt)
        for index, message in enumerate(messages):
            for key, text in message.items():
                _require_unicode(text, "prompt" if isinstance(prompt, str) else f"prompt message {index} {key}")
        _require_unicode(response, "response")
        if self._template is None:
            return render_plain(messages), " " + response
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
    response_cut: bool = False  # the response alone was over the budget: its end is lost, and the whole prompt


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
        budget = self.max_length - len(self.head_special) - len(self.tail_special)
        tail_ids, tail_over = self._edge(tail, budget, keep_end=False)
        # A response over the budget leaves no room for the prompt: it is never tokenized.
        head_ids, head_over = ([], True) if tail_over else self._edge(head, budget - len(tail_ids), keep_end=True)
        return Encoded(self.head_special + head_ids + tail_ids + self.tail_special, tail_over or head_over, tail_over)

    def encode_text(self, text: str, keep_end: bool = True, limit: int | None = None) -> Encoded:
        """A text rendered already (what the engines' routes take), framed by the tokenizer's special tokens, as
        the engines tokenize it. Over the limit (at most max_length, special tokens included) it loses its start,
        or its end when `keep_end` is false."""
        _require_unicode(text, "input")
        budget = min(limit or self.max_length, self.max_length) - len(self.head_special) - len(self.tail_special)
        ids, over = self._edge(text, max(budget, 1), keep_end=keep_end)
        return Encoded(self.head_special + ids + self.tail_special, over)

    def encode_ids(self, ids: Sequence[int], keep_end: bool = True, limit: int | None = None) -> Encoded:
        """Token ids a caller tokenized itself (vLLM takes them): used as given, cut to the limit."""
        vocabulary = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if bad := [i for i in ids if not 0 <= i < vocabulary]:
            raise InvalidInput(f"token id {bad[0]} is not in the model's vocabulary (0 to {vocabulary - 1})")
        budget = min(limit or self.max_length, self.max_length)
        kept = list(ids[len(ids) - budget :] if keep_end else ids[:budget])
        return Encoded(kept, len(ids) > budget)

    def _edge(self, text: str, count: int, keep_end: bool) -> tuple[list[int], bool]:
        """The first `count` ids of `text` (the last, with keep_end) and whether it has more, as if tokenized whole.

        The tokenizer works word by word, so the words of a piece taken from the kept end that lie away from its cut
        have the whole text's ids. A piece is tried first, then one four times as long, until those words give more
        than `count` ids, else the whole text is tokenized."""
        chars = CHARS_PER_TOKEN * count + 2 * CUT_MARGIN
        while chars < len(text):
            piece = text[len(text) - chars :] if keep_end else text[:chars]
            ids = _away_from_cut(self.tokenizer.encode(piece, add_special_tokens=False), chars, cut_at_start=keep_end)
            if len(ids) > count:
                return (ids[len(ids) - count :] if keep_end else ids[:count]), True
            if not ids:  # one word spans the piece: growing it would tokenize that word again and again
                break
            chars *= 4
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids if text else []
        return (ids[max(len(ids) - count, 0) :] if keep_end else ids[:count]), len(ids) > count

    def encode_many(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Encoded]:
        return [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]


def _away_from_cut(encoding: Encoding, length: int, cut_at_start: bool) -> list[int]:
    """A piece's ids less those of every word from its cut to the last one with a token within CUT_MARGIN of it."""
    ids, words = encoding.ids, encoding.word_ids
    gaps = [start if cut_at_start else length - end for start, end in encoding.offsets]
    if not cut_at_start:  # walk from the cut inwards either way
        ids, words, gaps = ids[::-1], words[::-1], gaps[::-1]
    first = max((i for i, gap in enumerate(gaps) if gap < CUT_MARGIN), default=-1) + 1
    while 0 < first < len(ids) and words[first] == words[first - 1]:
        first += 1
    return ids[first:] if cut_at_start else ids[first:][::-1]


def _special_frame(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer's post-processor puts before and after a single sequence."""
    bare = tokenizer.encode("a", add_special_tokens=False).ids
    framed = tokenizer.encode("a", add_special_tokens=True).ids
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return framed[:start], framed[start + len(bare) :]
    return [], []


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right", multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """int64 input_ids and attention_mask, padded on the given side to the longest sequence, rounded up to a
    multiple of `multiple` (fewer distinct shapes, for runtimes that build a kernel per shape)."""
    width = -(-max(len(s) for s in sequences) // multiple) * multiple
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
    """Score sequences in batches of similar length (less padding); results come back in input order, one row
    per sequence (a score, or a row of them when `run` gives several per sequence)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        part = run([sequences[i] for i in chunk])
        if out is None:
            out = np.empty((len(sequences), *part.shape[1:]), dtype=np.float64)
        out[chunk] = part
    return out if out is not None else np.empty(0, dtype=np.float64)
