"""How pairs are judged when a command judges many of them (`arbiter label`, `arbiter eval-judge`): the choices
that decide a verdict, which every label records, and how many pairs are in flight.

Each pair is sent to the judge as its own one-item request: the judge draws the principle of `sampling="sample"`
from the seed, the item and the item's index in its request, so one-item requests keep the draw independent of
batching and of what an earlier run already judged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from arbiter.bundle.render import Prompt
from arbiter.clients.protocol import JudgeItem, JudgeRequest, Verdict
from arbiter.errors import NotFound
from arbiter.judge.judging import Judge

Job = TypeVar("Job")


@dataclass(frozen=True)
class SetupRecord:
    """What a label file records about how its labels were made, and what a resumed run must match."""

    backend: str
    model: str
    constitution: str  # NAME@VERSION
    requested_principles: list[str] | None
    sampling: str
    chain_of_thought: bool
    seed: int


@dataclass(frozen=True)
class JudgeSetup:
    constitution: str | None = None  # None: the judge's default constitution
    principles: list[str] | None = None  # None: every principle of the constitution
    sampling: Literal["all", "sample"] = "sample"
    chain_of_thought: bool = False
    seed: int = 0
    # How the pairs are run; neither changes a verdict, so neither is recorded.
    batch_size: int = 8  # pairs in flight at once
    progress: bool = True

    def record(self, judge: Judge) -> SetupRecord:
        """The record of this setup on this judge; a ValueError (a user mistake) when the constitution or a named
        principle is unknown, before anything is judged."""
        try:
            constitution = judge.constitutions.get(self.constitution or judge.default_constitution)
            for name in self.principles or []:
                constitution.principle(name)
        except NotFound as exc:
            raise ValueError(exc.message) from exc
        return SetupRecord(
            backend=judge.backend.name,
            model=judge.backend.model,
            constitution=f"{constitution.name}@{constitution.version}",
            requested_principles=self.principles or None,
            sampling=self.sampling,
            chain_of_thought=self.chain_of_thought,
            seed=self.seed,
        )

    async def verdict(self, judge: Judge, prompt: Prompt, a: str, b: str) -> Verdict:
        request = JudgeRequest(
            mode="pairwise",
            constitution=self.constitution,
            principles=self.principles or None,
            sampling=self.sampling,
            chain_of_thought=self.chain_of_thought,
            seed=self.seed,
            items=[JudgeItem(prompt=prompt, response_a=a, response_b=b)],
        )
        return (await judge.judge(request)).verdicts[0]

    async def in_flight(self, jobs: Sequence[Job], run: Callable[[Job], Awaitable[None]]) -> None:
        """Run `run(job)` over the jobs, `batch_size` at a time; the first failure cancels the rest and is raised."""
        remaining = iter(jobs)

        async def worker() -> None:
            for job in remaining:  # one shared iterator: each job is taken by exactly one worker
                await run(job)

        tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(self.batch_size, len(jobs))))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
