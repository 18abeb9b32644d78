"""Encode, admit, then run: every path that scores checks its request against the limits, in the units the docs name,
after encoding and before anything is queued, so nothing over a limit ever reaches a model or the judge's backend.

Items are what the caller counts: items for score and reward, pairs for compare, responses for rank. Tokens are the
sequences' tokens after truncation, special tokens included, summed over every model the request reaches. Judge
characters are per judged item: its prompt and its responses together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from arbiter.bundle.render import Encoded
from arbiter.errors import TooLarge

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """The request limits (settings of the same names)."""

    max_items: int
    max_request_tokens: int
    judge_max_chars: int

    def items(self, count: int, unit: str = "items") -> None:
        if count > self.max_items:
            raise TooLarge(
                f"{count} {unit} in one request (limit {self.max_items})",
                details={"limit": "max_items", "value": count, "max": self.max_items},
            )

    def tokens(self, encodings: Iterable[Sequence[Encoded]]) -> None:
        count = sum(len(e.ids) for encoded in encodings for e in encoded)
        if count > self.max_request_tokens:
            raise TooLarge(
                f"{count} tokens in one request after truncation (limit {self.max_request_tokens})",
                details={"limit": "max_request_tokens", "value": count, "max": self.max_request_tokens},
            )

    def judge_chars(self, texts_per_item: Iterable[Sequence[str]]) -> None:
        for index, texts in enumerate(texts_per_item):
            count = sum(len(t) for t in texts)
            if count > self.judge_max_chars:
                raise TooLarge(
                    f"item {index} has {count} characters for the judge (limit {self.judge_max_chars})",
                    details={"limit": "judge_max_chars", "item": index, "value": count, "max": self.judge_max_chars},
                )

    def chunks(self, items: Sequence[T], tokens: Sequence[int]) -> Iterator[Sequence[T]]:
        """Consecutive runs of `items` (with `tokens` each) that fit one request: how the server's own work (the
        annotation statistics, canaries) stays inside the limits it holds callers to."""
        start, used = 0, 0
        for i, count in enumerate(tokens):
            if i > start and (i - start >= self.max_items or used + count > self.max_request_tokens):
                yield items[start:i]
                start, used = i, 0
            used += count
        if start < len(items):
            yield items[start:]
