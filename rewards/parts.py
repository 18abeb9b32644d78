"""Which part of a response a component reads. Reasoning models write `<think>...</think>` and then their answer
(DeepSeek-R1's template); a spec may reward the reasoning with one component and the answer with another.

- `response`: the whole response, as sent.
- `reasoning`: the text inside the first `<think>...</think>`; everything after `<think>` when the block was never
  closed (a generation cut at its token limit); everything before the first `</think>` when the response has no
  `<think>` (templates such as DeepSeek-R1's end the prompt with `<think>`, so the response only closes it); empty
  when the response has neither.
- `answer`: the text after the first `</think>`; empty when a `<think>` was never closed, since the model did not
  get to its answer; the whole response when it has neither.
Leading and trailing whitespace is stripped from `reasoning` and `answer`."""

from __future__ import annotations

from typing import Literal

Part = Literal["response", "reasoning", "answer"]

OPEN, CLOSE = "<think>", "</think>"


def read(response: str, part: Part) -> str:
    if part == "response":
        return response
    opened = response.find(OPEN)
    start = opened + len(OPEN) if opened >= 0 else 0  # no <think>: the prompt opened the block, if anything did
    closed = response.find(CLOSE, start)
    if closed < 0:
        if opened >= 0:
            return response[start:].strip() if part == "reasoning" else ""
        return "" if part == "reasoning" else response.strip()
    if part == "reasoning":
        return response[start:closed].strip()
    return response[closed + len(CLOSE) :].strip()
