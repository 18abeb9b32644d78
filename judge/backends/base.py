"""What every judge backend offers: generate a reply, and (when it can) the log-probabilities of the options
that could come next. Messages are OpenAI-style chat messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class OptionLogprobs:
    """Log-probabilities of each option as the next token of the reply; None where the backend did not say.

    `logprobs[i]` belongs to `options[i]`. A backend that only sees the top-k tokens leaves an option that was not
    among them as None; the caller renormalizes over what is known."""

    logprobs: list[float | None]
    prompt_tokens: int


class BackendError(Exception):
    """The judge's model could not answer: unreachable, failing (`timeout=False`) or too slow (`timeout=True`)."""

    def __init__(self, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class JudgeBackend(Protocol):
    name: str  # "local" or "openai"
    model: str  # what produced the verdicts: a model name or path

    async def complete(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0
    ) -> Completion: ...

    async def option_logprobs(
        self, messages: list[dict[str, str]], options: list[str], prefix: str = ""
    ) -> OptionLogprobs | None:
        """Log-probabilities of each option as the first token(s) of the assistant's reply after `prefix`
        (text the reply is forced to start with, e.g. a chain of thought ending in "The answer is ("), or None
        when the backend cannot give log-probabilities at all."""
        ...

    async def aclose(self) -> None: ...
