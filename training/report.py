"""An evaluation report: the table on screen, eval.json, evaluation.json (per source, with intervals and length
shares: the bundle's `evaluation`), and the reliability and score-histogram plots."""

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


def evaluate_into(folder: Path, scorer: Scorer, groups: Sequence[PreferenceGroup]) -> Metrics:
    """Score groups, print the table, and write eval.json and the three evaluation plots into folder."""
    pairs = score_pairs(groups, scorer)
    result = metrics(pairs)
    print(format_table(result), flush=True)
    write_json(result, folder / "eval.json")
    (folder / "evaluation.json").write_text(evaluation_section(pairs, "the held-out groups").model_dump_json(indent=2))
    plots.reliability_diagram(result["reliability"], result["ece"], folder / "reliability.png")
    plots.score_histograms(pairs, folder / "score_histograms.png")
    plots.accuracy_by_group(result, folder / "accuracy.png")
    return result
