"""Scoring preference data through a running Arbiter server (HTTP or gRPC), so that `arbiter eval` measures a
served model, the judge standing in for one (model `judge` or `judge:CONSTITUTION` on /v1/score) and a reward spec
by the same code as a bundle or a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arbiter.bundle.render import Prompt
from arbiter.clients import RewardClient
from arbiter.clients.adapters.groups import group_id


class ServedModelScorer:
    """Raw scores from /v1/score; the client cuts the call into chunks and retries them."""

    def __init__(self, client: RewardClient, model: str | None) -> None:
        self.client, self.model = client, model

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        answer = self.client.score(list(prompts), list(responses), model=self.model)
        return np.asarray(answer.scores, dtype=np.float64)


class SpecScorer:
    """Rewards from a reward spec (/v1/reward).

    A spec's batch transforms (whitening, group normalization) see every item of a request, so each request carries
    whole runs of responses to one prompt, tagged as that prompt's group (as the trainers' adapters tag GRPO
    groups): the responses that are compared with each other are always scored under the same transform."""

    def __init__(self, client: RewardClient, spec: str | None, max_items: int = 64) -> None:
        self.client, self.spec, self.max_items = client, spec, max_items

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        rewards: list[float] = []
        for part in requests(prompts, self.max_items):
            index = [i for run in part for i in run]
            answer = self.client.reward(
                [prompts[i] for i in index],
                [responses[i] for i in index],
                spec=self.spec,
                groups=[_group(prompts[i]) for i in index],
                update_stats=False,  # measuring the reward must not move a live run's running statistics
            )
            rewards += answer.rewards
        return np.asarray(rewards, dtype=np.float64)


def _group(prompt: Prompt) -> str:
    return group_id(prompt if isinstance(prompt, str) else [dict(m) for m in prompt])


def requests(prompts: Sequence[Prompt], max_items: int) -> list[list[range]]:
    """Runs of consecutive items with one prompt, packed in order into requests of at most max_items (a longer run is
    a request of its own, which the server refuses with a clear error if it is over the server's limit)."""
    runs: list[range] = []
    start = 0
    for i in range(1, len(prompts) + 1):
        if i == len(prompts) or prompts[i] != prompts[start]:
            runs.append(range(start, i))
            start = i
    packed: list[list[range]] = []
    size = 0
    for run in runs:
        if not packed or size + len(run) > max_items:
            packed.append([])
            size = 0
        packed[-1].append(run)
        size += len(run)
    return packed
