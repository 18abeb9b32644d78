"""An evaluation report: the table on screen, eval.json, evaluation.json (per source, with intervals and length
shares: the bundle's `evaluation`), the accuracy, reliability and score-histogram plots, and with a section table
the RewardBench-style section scores (sections.json)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from arbiter.data.schema import PreferenceGroup
from arbiter.training import plots
from arbiter.training.evaluate import (
    Metrics,
    Scorer,
    evaluation_section,
    format_table,
    metrics,
    score_pairs,
    write_json,
)
from arbiter.training.section_scores import SectionTable, format_sections, section_scores


def evaluate_into(
    folder: Path | None, scorer: Scorer, groups: Sequence[PreferenceGroup], sections: SectionTable | None = None
) -> Metrics:
    """Score groups and print the tables; with a folder, write eval.json, evaluation.json, the three evaluation plots
    and, with a section table, sections.json into it."""
    pairs = score_pairs(groups, scorer)
    result = metrics(pairs)
    print(format_table(result), flush=True)
    report = section_scores(pairs, sections) if sections is not None else None
    if report is not None:
        print(format_sections(report), flush=True)
    if folder is None:
        return result
    write_json(result, folder / "eval.json")
    if report is not None:
        write_json(report, folder / "sections.json")
    (folder / "evaluation.json").write_text(evaluation_section(pairs, "the held-out groups").model_dump_json(indent=2))
    plots.reliability_diagram(result["reliability"], result["ece"], folder / "reliability.png")
    plots.score_histograms(pairs, folder / "score_histograms.png")
    plots.accuracy_by_group(result, folder / "accuracy.png")
    return result
