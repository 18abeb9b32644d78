"""Agreement maths against known answers and a reference implementation; export rows as training reads them."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from arbiter.annotation.agreement import cohen_kappa, krippendorff_alpha, mean_pairwise_kappa, pair_units
from arbiter.annotation.export import ExportFilter, export_rows
from arbiter.annotation.stats import agreement
from arbiter.annotation.store import JudgedTask, Judgement
from arbiter.annotation.tables import Response
from arbiter.data.load import load_source
from arbiter.data.sources import SourceSpec

NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)


def judged(task_id: int, texts: list[str], *votes: tuple[str, list[int], str | None], flagged: bool = False):
    responses = [Response(position=i, text=t, policy="sft", policy_version="v1") for i, t in enumerate(texts)]
    judgements = [Judgement(name, ranking, strength, flagged, NOW, 10.0) for name, ranking, strength in votes]
    return JudgedTask(
        task_id, "pair" if len(texts) == 2 else "ranking", f"prompt {task_id}", responses, NOW, judgements
    )


def test_cohen_kappa_textbook_example():
    # Two readers, 50 proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(first, first) == pytest.approx(1.0)
    assert cohen_kappa(["a"] * 4, ["a"] * 4) is None  # one label only: chance agreement is total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_alpha_matches_the_reference_package(seed: int):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, size=60)
    data = np.where(rng.random((4, 60)) < 0.75, truth, rng.integers(0, 3, size=(4, 60))).astype(float)
    data[rng.random((4, 60)) < 0.3] = np.nan  # annotators skip items
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    units = [[int(v) for v in column if not np.isnan(v)] for column in data.T]
    assert krippendorff_alpha(units) == pytest.approx(expected, abs=1e-9)


def test_alpha_edges():
    assert krippendorff_alpha([["<", "<"], [">", ">"], ["=", "="]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["<", "<"], ["<", "<"]]) is None
    assert krippendorff_alpha([["<"], [">"]]) is None


def test_pairwise_units_from_rankings():
    units = pair_units({7: {"x": [1, 2, 3], "y": [2, 1, 3]}})
    assert units[(7, 0, 1)] == {"x": "<", "y": ">"}
    assert units[(7, 0, 2)] == {"x": "<", "y": "<"}
    kappa, pairs = mean_pairwise_kappa(units.values())
    assert pairs == 1 and kappa is not None


def test_stats_agreement_over_tasks():
    rng = random.Random(0)
    tasks = []
    for i in range(40):
        truth = [1, 2] if rng.random() < 0.5 else [2, 1]
        noisy = truth if rng.random() < 0.8 else truth[::-1]
        tasks.append(judged(i, ["a", "b"], ("x", truth, "better"), ("y", noisy, "better")))
    result = agreement(tasks)
    labels = [(t.judgements[0].ranking[0], t.judgements[1].ranking[0]) for t in tasks]
    assert result.cohen_kappa == pytest.approx(cohen_kappa(*zip(*labels, strict=True)))
    assert result.units == 40 and result.annotator_pairs == 1
    assert 0.3 < result.krippendorff_alpha < 0.9


def test_export_majority_margin_strength_and_filters():
    task = judged(
        1,
        ["kind", "rude"],
        ("x", [1, 2], "better"),
        ("y", [1, 2], "significantly_better"),
        ("z", [2, 1], "slightly_better"),
    )
    (row,) = export_rows([task], ExportFilter())
    assert (row["chosen"], row["rejected"]) == ("kind", "rude")
    assert row["margin"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)  # Llama 2 margins of the agreeing votes
    assert row["preference_strength"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["meta"]["annotators"] == ["x", "y", "z"]
    assert list(export_rows([task], ExportFilter(min_agreement=0.7))) == []
    assert list(export_rows([task], ExportFilter(min_annotations=4))) == []
    each = list(export_rows([task], ExportFilter(aggregate="each")))
    assert [(r["chosen"], r["margin"]) for r in each] == [("kind", 0.6667), ("kind", 1.0), ("rude", 0.3333)]
    assert "preference_strength" not in each[0] and {r["meta"]["agreement"] for r in each} == {0.6667}
    assert list(export_rows([task], ExportFilter(aggregate="each", min_agreement=0.7))) == []

    split = judged(2, ["a", "b"], ("x", [1, 2], "better"), ("y", [2, 1], "better"))
    tied = judged(3, ["a", "b"], ("x", [1, 1], None))
    flagged = judged(4, ["a", "b"], ("x", [1, 2], "better"), flagged=True)
    assert list(export_rows([split, tied], ExportFilter())) == []  # no majority, or a tie: no preference
    assert len(list(export_rows([flagged], ExportFilter()))) == 1
    assert list(export_rows([flagged], ExportFilter(include_flagged=False))) == []

    ranked = judged(5, ["r0", "r1", "r2"], ("x", [1, 2, 3], None), ("y", [2, 1, 3], None), ("z", [1, 3, 2], None))
    (kwise,) = export_rows([ranked], ExportFilter())
    assert kwise["responses"] == ["r0", "r1", "r2"] and kwise["ranking"] == [1, 2, 3]  # mean ranks 1.33, 2, 2.67


def test_exported_rows_are_training_data(tmp_path: Path):
    tasks = [
        judged(1, ["good", "bad"], ("x", [1, 2], "significantly_better")),
        judged(2, ["meh", "fine"], ("x", [2, 1], "negligibly_better"), ("y", [2, 1], "slightly_better")),
        judged(3, ["one", "two", "three"], ("x", [3, 1, 2], None)),
    ]
    path = tmp_path / "annotations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in export_rows(tasks, ExportFilter())))
    groups, report = load_source(SourceSpec(path=str(path)))
    assert len(groups) == 3 and not report.bad
    first, second, third = groups
    assert first.responses == ("good", "bad") and first.comparisons[0].margin == 1.0
    assert second.responses == ("fine", "meh") and second.comparisons[0].strength == 1.0
    assert second.comparisons[0].margin == pytest.approx(1 / 6, abs=1e-4)
    assert third.responses == ("one", "two", "three") and len(third.comparisons) == 3
    assert {(c.winner, c.loser) for c in third.comparisons} == {(1, 2), (1, 0), (2, 0)}
