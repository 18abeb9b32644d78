"""The numbers an annotation lead watches: progress, throughput per annotator, agreement."""

from __future__ import annotations

from collections import Counter
from statistics import median

from arbiter.annotation.agreement import krippendorff_alpha, mean_pairwise_kappa, pair_units
from arbiter.annotation.store import JudgedTask, Judgement
from arbiter.clients.annotation import Agreement, AnnotationStats, AnnotatorThroughput, DailyCount, RewardModelAgreement


def agreement(tasks: list[JudgedTask]) -> Agreement:
    rankings = {t.task_id: {j.annotator: j.ranking for j in t.judgements} for t in tasks}
    units = pair_units(rankings)
    judged = [u for u in units.values() if len(u) >= 2]
    pair_tasks = {t.task_id for t in tasks if t.kind == "pair"}
    kappa, annotator_pairs = mean_pairwise_kappa(u for (task, _, _), u in units.items() if task in pair_tasks)
    return Agreement(
        cohen_kappa=kappa,
        krippendorff_alpha=krippendorff_alpha(list(u.values()) for u in judged),
        units=len(judged),
        annotator_pairs=annotator_pairs,
    )


def throughput(tasks: list[JudgedTask], skips: dict[str, int]) -> list[AnnotatorThroughput]:
    by_annotator: dict[str, list[Judgement]] = {}
    for task in tasks:
        for j in task.judgements:
            by_annotator.setdefault(j.annotator, []).append(j)
    rows = []
    for name in sorted(set(by_annotator) | set(skips)):
        judgements = by_annotator.get(name, [])
        times = sorted(j.created_at for j in judgements)
        span_hours = (times[-1] - times[0]).total_seconds() / 3600 if len(times) > 1 else 0.0
        rows.append(
            AnnotatorThroughput(
                annotator=name,
                submitted=len(judgements),
                skipped=skips.get(name, 0),
                per_hour=(len(times) - 1) / span_hours if span_hours > 0 else None,
                median_seconds=median(j.seconds for j in judgements) if judgements else None,
            )
        )
    return rows


def annotation_stats(
    tasks: list[JudgedTask],
    task_states: dict[str, int],
    assignment_states: dict[str, int],
    skips: dict[str, int],
    reward_model: RewardModelAgreement | None,
) -> AnnotationStats:
    judgements = [j for t in tasks for j in t.judgements]
    daily = Counter(j.created_at.date().isoformat() for j in judgements)
    return AnnotationStats(
        tasks=task_states,
        assignments=assignment_states,
        annotations=len(judgements),
        safety_flags=sum(j.safety_flag for j in judgements),
        annotators=throughput(tasks, skips),
        agreement=agreement(tasks),
        reward_model=reward_model,
        daily=[DailyCount(date=d, annotations=n) for d, n in sorted(daily.items())],
    )
