"""A group_judge component's work: the pairwise judge request over every group's comparisons (built, and so admitted,
before anything is queued), and the rewards and position inconsistency read back from the judge's verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arbiter.clients.protocol import JudgeItem, JudgeRequest, Verdict
from arbiter.errors import InvalidInput
from arbiter.rewards.compose import ItemContext
from arbiter.rewards.group_compare import comparison_pairs, group_rewards
from arbiter.rewards.spec import GroupJudgeComponent


@dataclass(frozen=True)
class GroupJudgement:
    component: GroupJudgeComponent
    groups: list[list[int]]  # item indices per group, in item order
    pairs: list[tuple[int, int]]  # (item, item) compared, group after group: the request's items in order
    request: JudgeRequest
    items: int

    @classmethod
    def plan(
        cls, component: GroupJudgeComponent, items: Sequence[ItemContext], responses: Sequence[str]
    ) -> GroupJudgement:
        if missing := [i for i, item in enumerate(items) if item.group is None]:
            raise InvalidInput(
                f"component {component.name!r} (group_judge) compares the responses of a group: item {missing[0]} "
                "has no group id",
                details={"items": missing[:20]},
            )
        members: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            members.setdefault(str(item.group), []).append(index)
        groups = list(members.values())
        pairs = [(group[a], group[b]) for group in groups for a, b in comparison_pairs(len(group), component.pairs)]
        request = JudgeRequest(
            mode="pairwise",
            constitution=component.constitution,
            principles=component.principles,
            rationale=False,
            items=[
                JudgeItem(prompt=items[a].prompt, response_a=responses[a], response_b=responses[b]) for a, b in pairs
            ],
        )
        return cls(component, groups, pairs, request, len(items))

    def rewards(self, verdicts: Sequence[Verdict]) -> tuple[np.ndarray, np.ndarray]:
        """One reward per item, and the share of its comparisons whose two orders disagreed (0 when it had none)."""
        p = {pair: v.score for pair, v in zip(self.pairs, verdicts, strict=True)}
        values = np.zeros(self.items)
        for group in self.groups:
            local = {item: k for k, item in enumerate(group)}
            compared = [pair for pair in self.pairs if pair[0] in local]
            mine = [(local[a], local[b]) for a, b in compared]
            values[group] = group_rewards(len(group), mine, [p[pair] for pair in compared], self.component.reward)
        disagreed, taken = np.zeros(self.items), np.zeros(self.items)
        for (a, b), verdict in zip(self.pairs, verdicts, strict=True):
            taken[[a, b]] += 1
            disagreed[[a, b]] += float(bool(verdict.inconsistent))
        return values, np.divide(disagreed, taken, out=np.zeros(self.items), where=taken > 0)
