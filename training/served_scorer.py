"""Scoring preference data through a running Arbiter server (HTTP or gRPC), so that `arbiter eval` measures a
served model, the judge standing in for one (model `judge` or `judge:CONSTITUTION` on /v1/score) and a reward spec
by the same code as a bundle or a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arbiter.bundle.render import Prompt
from arbiter.clients import RewardClient


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
    whole runs of responses to one prompt, tagged as one group: the responses that are compared with each other are
    always scored under the same transform."""

    def __init__(self, client: RewardClient, spec: str | None, max_items: int = 64) -> None:
        self.client, self.spec, self.max_items = client, spec, max_items

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        rewards: list[float] = []
        for part in self._requests(prompts):
            groups = [str(run) for run, items in part for _ in items]
            index = [i for _, items in part for i in items]
            answer = self.client.reward(
                [prompts[i] for i in index], [responses[i] for i in index], spec=self.spec, groups=groups
            )
            rewards += answer.rewards
        return np.asarray(rewards, dtype=np.float64)

    def _requests(self, prompts: Sequence[Prompt]) -> list[list[tuple[int, range]]]:
        """Runs of consecutive items with one prompt, packed into requests of at most max_items (a longer run is a
        request of its own, which the server refuses with a clear error if it is over the server's limit)."""
        runs: list[range] = []
        start = 0
        for i in range(1, len(prompts) + 1):
            if i == len(prompts) or prompts[i] != prompts[start]:
                runs.append(range(start, i))
                start = i
        requests: list[list[tuple[int, range]]] = []
        size = 0
        for number, run in enumerate(runs):
            if not requests or size + len(run) > self.max_items:
                requests.append([])
                size = 0
            requests[-1].append((number, run))
            size += len(run)
        return requests
