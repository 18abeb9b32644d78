"""Evaluation metrics on constructed scores whose answers are known."""

from __future__ import annotations

import math

import numpy as np

from arbiter.data.schema import Comparison, PreferenceGroup
from arbiter.training.evaluate import calibration, format_table, metrics, pairs_from_scores, to_json


def group(chosen: str, rejected: str, source: str = "s", subset: str | None = None) -> PreferenceGroup:
    return PreferenceGroup("p", (chosen, rejected), (Comparison(0, 1),), source, subset)


def test_accuracy_counts_ties_as_wrong_and_splits_by_source_and_subset():
    groups = [
        group("a", "bb", "x", "easy"),
        group("ccc", "d", "x", "hard"),
        group("e", "f", "y", "hard"),
        group("gg", "h", "y", "hard"),
    ]
    scores = np.array([2.0, 1.0, 0.0, 1.0, 0.5, 0.5, 3.0, 1.0])  # right, wrong, tie, right
    result = metrics(pairs_from_scores(groups, scores))
    assert result["accuracy"] == 0.5
    assert result["by_source"]["x"]["accuracy"] == 0.5 and result["by_source"]["y"]["accuracy"] == 0.5
    assert result["by_subset"]["easy"]["accuracy"] == 1.0 and math.isclose(
        result["by_subset"]["hard"]["accuracy"], 1 / 3
    )
    assert math.isclose(result["mean_margin"], (1 - 1 + 0 + 2) / 4)


def test_length_bias():
    # labels: the longer response wins in 2 of 3 pairs of different length; the model prefers longer in all 3
    groups = [
        group("long answer", "short"),
        group("longer still", "tiny"),
        group("no", "much longer"),
        group("same", "size"),
    ]
    scores = np.array([2.0, 1.0, 2.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    bias = metrics(pairs_from_scores(groups, scores))["length_bias"]
    assert bias["pairs_with_different_length"] == 3
    assert math.isclose(bias["labels_prefer_longer"], 2 / 3) and bias["model_prefers_longer"] == 1.0
    assert bias["score_length_spearman"] > 0.5


def test_calibration_of_a_perfectly_calibrated_and_an_overconfident_model():
    # 8 pairs at p = 0.75 with 6 right: calibrated, ECE 0
    d = math.log(3)
    ece, table = calibration(np.array([d] * 6 + [-d] * 2))
    assert ece < 1e-9 and table[0]["count"] == 8 and math.isclose(table[0]["accuracy"], 0.75)
    # confident (p ~ 1) but right only half the time: ECE ~ 0.5
    ece, _ = calibration(np.array([20.0, -20.0]))
    assert math.isclose(ece, 0.5, abs_tol=1e-6)


def test_table_and_strict_json_with_undefined_metrics():
    result = metrics(pairs_from_scores([group("same", "size")], np.array([1.0, 0.0])))
    assert math.isnan(result["length_bias"]["labels_prefer_longer"])
    assert "null" in to_json(result) and "NaN" not in to_json(result)
    assert "ALL" in format_table(result) and "n/a" in format_table(result)
