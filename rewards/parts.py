"""Which part of a response a component reads. Reasoning models write `<think>...</think>` and then their answer
(DeepSeek-R1's template); a spec may reward the reasoning with one component and the answer with another.

- `response`: the whole response, as sent.
- `reasoning`: the text inside the first `<think>...</think>`; everything after `<think>` when the block was never
  closed (a generation cut at its token limit); empty when there is no `<think>`.
- `answer`: the text after the first `</think>`; the whole response when there is no `<think>`; empty when the
  block was never closed, since the model did not get to its answer.
Leading and trailing whitespace is stripped from `reasoning` and `answer`."""

from __future__ import annotations

import re
from typing import Literal

Part = Literal["response", "reasoning", "answer"]

_OPEN, _CLOSE = re.compile(r"<think>"), re.compile(r"</think>")


def read(response: str, part: Part) -> str:
    if part == "response":
        return response
    opened = _OPEN.search(response)
    if opened is None:
        return "" if part == "reasoning" else response.strip()
    closed = _CLOSE.search(response, opened.end())
    if closed is None:
        return response[opened.end() :].strip() if part == "reasoning" else ""
    if part == "reasoning":
        return response[opened.end() : closed.start()].strip()
    return response[closed.end() :].strip()
