"""Annotations out as the preference rows `arbiter train` reads: pairs {prompt, chosen, rejected, margin} and
K-wise {prompt, responses, ranking}. Several annotators of one task are folded into one row by majority (or each
becomes its own row); the margin comes from the Llama 2 strength scale."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations
from statistics import fmean
from typing import Any, Literal

from arbiter.annotation.store import AnnotationStore, JudgedTask, Judgement

# Llama 2's margins for its four levels (the "small" set of Touvron et al. 2023, table 28), in (0, 1] like the
# margins of the shared preference files; "negligibly better / unsure" adds no margin.
STRENGTH_MARGIN = {"significantly_better": 1.0, "better": 2 / 3, "slightly_better": 1 / 3, "negligibly_better": 0.0}
DATASET = "arbiter-annotations"


@dataclass(frozen=True)
class ExportFilter:
    since: datetime | None = None
    until: datetime | None = None
    policy_version: str | None = None
    min_annotations: int = 1
    min_agreement: float = 0.0  # share of a task's annotators who agree with the row it becomes
    include_flagged: bool = True
    aggregate: Literal["majority", "each"] = "majority"


def export(store: AnnotationStore, where: ExportFilter) -> list[dict[str, Any]]:
    """The rows for `where`, from the votes made between `since` and `until`."""
    return list(export_rows(store.judged_tasks(where.since, where.until, where.policy_version), where))


def export_rows(tasks: list[JudgedTask], where: ExportFilter) -> Iterator[dict[str, Any]]:
    for task in tasks:
        judgements = task.judgements
        if len(judgements) < where.min_annotations:
            continue
        if not where.include_flagged and any(j.safety_flag for j in judgements):
            continue
        ranking, agreement = majority(task, judgements)
        if agreement < where.min_agreement:
            continue
        rows: Iterator[dict[str, Any] | None]
        if where.aggregate == "each":  # every vote its own row, each with its task's agreement
            rows = (_row(task, [j], j.ranking, agreement, majority_share=False) for j in judgements)
        else:
            rows = iter([_row(task, judgements, ranking, agreement)] if ranking is not None else [])
        yield from (row for row in rows if row is not None)


def utc(moment: datetime | None) -> datetime | None:
    """A time given without a zone is taken as UTC, the zone the store keeps."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def majority(task: JudgedTask, judgements: list[Judgement]) -> tuple[list[int] | None, float]:
    """The folded ranking and the share of judgements agreeing with it (averaged over response pairs).

    A pair goes to the side with the most votes (a draw between sides, or ties outvoting both, gives no row);
    a K-wise ranking is by mean rank (Borda)."""
    if task.kind == "pair":
        votes = Counter(_side(j.ranking) for j in judgements)
        best, count = max(votes.items(), key=lambda kv: kv[1])
        if best == "=" or list(votes.values()).count(count) > 1:
            return None, count / len(judgements)
        return ([1, 2] if best == "<" else [2, 1]), count / len(judgements)
    k = len(task.responses)
    means = [fmean(j.ranking[i] for j in judgements) for i in range(k)]
    ranking = [1 + sum(1 for other in means if other < mine) for mine in means]
    if len(set(ranking)) == 1:
        return None, 0.0
    shares = []
    for i, jj in combinations(range(k), 2):
        side = _side([ranking[i], ranking[jj]])
        shares.append(sum(_side([j.ranking[i], j.ranking[jj]]) == side for j in judgements) / len(judgements))
    return ranking, fmean(shares)


def _side(ranks: list[int]) -> str:
    return "<" if ranks[0] < ranks[1] else (">" if ranks[0] > ranks[1] else "=")


def _row(
    task: JudgedTask, judgements: list[Judgement], ranking: list[int], agreement: float, majority_share: bool = True
) -> dict[str, Any] | None:
    responses = [r.text for r in task.responses]
    meta = {
        "task_id": task.task_id,
        "annotators": [j.annotator for j in judgements],
        "agreement": round(agreement, 4),
        "safety_flags": sum(j.safety_flag for j in judgements),
        "policies": [[r.policy, r.policy_version] for r in task.responses],
    }
    row: dict[str, Any] = {"prompt": task.prompt, "dataset": DATASET, "meta": meta}
    if len(responses) == 2:
        if ranking[0] == ranking[1]:
            return None  # ties carry no preference for a Bradley-Terry model
        winner = 0 if ranking[0] < ranking[1] else 1
        row["chosen"], row["rejected"] = responses[winner], responses[1 - winner]
        agreeing = [j for j in judgements if _side(j.ranking) == _side(ranking)]
        margins = [STRENGTH_MARGIN[j.strength] for j in agreeing if j.strength is not None]
        if margins:
            row["margin"] = round(fmean(margins), 4)
        if majority_share and len(judgements) > 1:
            row["preference_strength"] = round(agreement, 4)
        return row
    if len(set(ranking)) == 1:
        return None
    row["responses"], row["ranking"] = responses, ranking
    return row
