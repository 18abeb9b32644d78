"""A `reward_funcs` entry for TRL's GRPOTrainer and RLOOTrainer, scored by an Arbiter server.

    from trl import GRPOTrainer
    from arbiter.clients.adapters.trl import ArbiterReward

    trainer = GRPOTrainer(model=..., reward_funcs=ArbiterReward("http://127.0.0.1:8000"), ...)

TRL calls `reward_func(prompts=..., completions=..., completion_ids=..., **columns)` and wants one float per
completion. Both of TRL's forms work: standard (strings) and conversational (lists of messages, where the
completion is the assistant's turn). With `spec=NAME` the reward comes from a reward spec (/v1/reward), with the
prompt as each completion's group. `AsyncArbiterReward` is the async form: TRL runs async reward functions on
its own event loop, concurrently with other reward functions.

TRL passes the dataset's other columns as keyword arguments: with a spec, the label each verifier checks against
is the column `label_column` names, or else the first of `label`, `ground_truth`, `answer`, `solution` that the
dataset has; `data_source` routes items. An item a failed verifier masks gets None, which TRL leaves out of the
reward (its GRPOTrainer sums reward functions with nansum).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arbiter.clients.adapters.groups import prompt_groups
from arbiter.clients.client import AsyncRewardClient, RewardClient
from arbiter.clients.protocol import PlainPrompt, RewardResponse


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A conversational completion is a list of messages (usually one assistant turn): its text is theirs."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")


def trl_items(prompts: Sequence[Any], completions: Sequence[Any]) -> tuple[list[PlainPrompt], list[str]]:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    as_prompts: list[PlainPrompt] = [p if isinstance(p, str) else [dict(m) for m in p] for p in prompts]
    return as_prompts, [completion_text(c) for c in completions]


LABEL_COLUMNS = ("label", "ground_truth", "answer", "solution")


def references(columns: Mapping[str, Any], label_column: str | None) -> tuple[list[Any] | None, list[Any] | None]:
    """The labels and data sources among TRL's dataset columns (None where the dataset has none)."""
    name = label_column or next((c for c in LABEL_COLUMNS if c in columns), None)
    if label_column is not None and label_column not in columns:
        raise ValueError(f"label_column {label_column!r} is not a column TRL passed; it passed {sorted(columns)}")
    labels = list(columns[name]) if name is not None else None
    sources = columns.get("data_source")
    return labels, list(sources) if sources is not None else None


def masked(answer: RewardResponse) -> list[float | None]:
    """The rewards, None where a failed verifier masks the item."""
    mask = answer.mask or [False] * len(answer.rewards)
    return [None if m else r for r, m in zip(answer.rewards, mask, strict=True)]


class _Options:
    """What both forms hold: where to send, what to ask for. The client itself is made on first use, so the
    reward function pickles (TRL and accelerate may copy it into workers)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        model: str | None = None,
        normalize: bool = False,
        spec: str | None = None,
        name: str = "arbiter",
        label_column: str | None = None,
        **client_options: Any,
    ) -> None:
        self.url, self.model, self.normalize, self.spec = url, model, normalize, spec
        self.label_column = label_column
        self.__name__ = name  # TRL logs each reward function under this name
        self.client_options = {"on_failure": "nan", **client_options}  # one failed chunk must not stop training

    def _pick(self, scores: Sequence[float], normalized: Sequence[float] | None) -> list[float | None]:
        return list(normalized if self.normalize and normalized is not None else scores)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_client"}


class ArbiterReward(_Options):
    _client: RewardClient | None = None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if self._client is None:
            self._client = RewardClient(self.url, model=self.model, **self.client_options)
        items = trl_items(prompts, completions)
        if self.spec is not None:
            labels, sources = references(columns, self.label_column)
            groups = prompt_groups(items[0])
            return masked(
                self._client.reward(*items, spec=self.spec, groups=groups, labels=labels, data_sources=sources)
            )
        answer = self._client.score(*items, normalize=self.normalize)
        return self._pick(answer.scores, answer.normalized_scores)


class AsyncArbiterReward(_Options):
    _client: AsyncRewardClient | None = None

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if self._client is None:
            self._client = AsyncRewardClient(self.url, model=self.model, **self.client_options)
        items = trl_items(prompts, completions)
        if self.spec is not None:
            labels, sources = references(columns, self.label_column)
            groups = prompt_groups(items[0])
            return masked(
                await self._client.reward(*items, spec=self.spec, groups=groups, labels=labels, data_sources=sources)
            )
        answer = await self._client.score(*items, normalize=self.normalize)
        return self._pick(answer.scores, answer.normalized_scores)
