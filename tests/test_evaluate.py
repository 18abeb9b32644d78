"""Evaluation metrics on constructed scores whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from arbiter.data.schema import Comparison, PreferenceGroup
from arbiter.training.evaluate import (
    accuracy_interval,
    bootstrap_shares,
    calibration,
    evaluation_section,
    format_table,
    metrics,
    pairs_from_scores,
    to_json,
)


def group(
    chosen: str, rejected: str, source: str = "s", subset: str | None = None, prompt: str | None = None
) -> PreferenceGroup:
    """A pair; its prompt is its own unless given (the intervals resample prompts)."""
    return PreferenceGroup(prompt or f"p {chosen} {rejected}", (chosen, rejected), (Comparison(0, 1),), source, subset)


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


def test_bootstrap_interval_brackets_the_share_and_shrinks_with_more_pairs():
    few, many = np.array([1.0, 0.0] * 10), np.array([1.0, 0.0] * 1000)
    low, high = accuracy_interval(few)
    assert low < 0.5 < high and low >= 0.2 and high <= 0.8  # binomial: 0.5 +- 1.96 * sqrt(0.25 / 20) = +-0.22
    many_low, many_high = accuracy_interval(many)
    assert many_high - many_low < (high - low) / 5 and abs((many_high - many_low) / 2 - 1.96 * 0.5 / 2000**0.5) < 0.003
    assert accuracy_interval(np.ones(30)) == (1.0, 1.0) and accuracy_interval(few) == (low, high)  # seeded


def test_intervals_resample_prompts_with_all_of_their_pairs():
    # 20 prompts of 10 pairs each, every pair of a prompt right or every one wrong: 200 pairs, but 20 observations
    hits = np.repeat(np.array([1.0, 0.0] * 10), 10)
    prompts = np.repeat(np.array([f"p{i}" for i in range(20)]), 10)
    by_pair, by_prompt = accuracy_interval(hits), accuracy_interval(hits, clusters=prompts)
    assert by_prompt[0] < 0.5 < by_prompt[1]
    # binomial on 20 prompts: half-width 1.96 * sqrt(0.25 / 20) = 0.22; on 200 pairs it would be 0.07
    assert abs((by_prompt[1] - by_prompt[0]) / 2 - 0.22) < 0.04 and abs((by_pair[1] - by_pair[0]) / 2 - 0.07) < 0.015
    # one pair per prompt: exactly the pair bootstrap (the same draws), whatever the keys' sort order
    single = np.array([1.0, 0.0, 1.0, 1.0, 0.0] * 8)
    keys = np.array([f"z{39 - i}" for i in range(40)])
    assert accuracy_interval(single, clusters=keys) == accuracy_interval(single)
    # the share is over every pair drawn, so prompts weigh by their pairs: drawing a (3 of 3 right) and b (0 of 1)
    # gives 3/4, not the mean of the prompts' shares (1/2)
    drawn = bootstrap_shares(np.array([1.0, 1.0, 1.0, 0.0]), 50, 0, np.array(["a", "a", "a", "b"]))
    assert set(np.unique(drawn)) == {0.0, 0.75, 1.0}
    groups = [group(f"c{i}", "r", prompt=f"q{i % 2}") for i in range(6)] + [group("c", "r", "other")]
    result = metrics(pairs_from_scores(groups, np.tile([1.0, 0.0], 7)))
    assert result["by_source"]["s"]["prompts"] == 2 and result["by_source"]["other"]["prompts"] == 1
    section = evaluation_section(pairs_from_scores(groups, np.tile([1.0, 0.0], 7)), "seven pairs")
    assert (section.overall.pairs, section.overall.prompts, section.by_source["s"].prompts) == (7, 3, 2)
    assert "prompts" in format_table(result)


def test_evaluation_section_per_source_with_length_shares():
    groups = [group("long one", "s", "x"), group("s", "long one", "x"), group("aa", "b", "y"), group("c", "dd", "y")]
    # x: the longer wins by the labels in 1 of 2 and the model always scores the longer higher (1 right, 1 wrong);
    # y: the labels prefer the longer once, the model ranks both right.
    scores = np.array([2.0, 1.0, 1.0, 2.0, 3.0, 0.0, 1.0, 0.0])
    section = evaluation_section(pairs_from_scores(groups, scores), "four pairs")
    x, y = section.by_source["x"], section.by_source["y"]
    assert (x.pairs, x.accuracy, x.labels_prefer_longer, x.model_prefers_longer) == (2, 0.5, 0.5, 1.0)
    assert (y.pairs, y.accuracy, y.labels_prefer_longer, y.model_prefers_longer) == (2, 1.0, 0.5, 0.5)
    assert section.overall.pairs == 4 and section.overall.accuracy == 0.75 and section.data == "four pairs"


def test_fidelity_gate_on_known_scores():
    from arbiter.training.export import FidelityGate, fidelity

    groups = [group(f"c{i}", f"r{i}") for i in range(100)]
    rng = np.random.default_rng(0)
    fp32 = rng.normal(size=200)
    exact = fidelity(groups, fp32, fp32.copy(), FidelityGate())
    assert exact.reason is None and exact.spearman == 1.0 and exact.pairwise_agreement == 1.0
    assert exact.accuracy == exact.fp32_accuracy == float((fp32[0::2] > fp32[1::2]).mean())

    # Noise far below the score spread keeps the ranking; negating every score keeps nothing.
    close = fidelity(groups, fp32, fp32 + rng.normal(scale=1e-4, size=200), FidelityGate())
    assert close.reason is None and close.spearman > 0.999
    flipped = fidelity(groups, fp32, -fp32, FidelityGate())
    assert math.isclose(flipped.spearman, -1.0)
    assert "spearman" in flipped.reason and "accuracy" in flipped.reason

    # A monotone distortion keeps every rank, so only the accuracy gate could fail it, and it does not.
    squashed = fidelity(groups, fp32, np.tanh(fp32), FidelityGate())
    assert squashed.reason is None and math.isclose(squashed.spearman, 1.0)

    # One pair of 100 flipped moves accuracy by a whole point: over a gate of half a point.
    shifted = fp32.copy()
    right = int(np.flatnonzero(fp32[0::2] > fp32[1::2])[0])
    shifted[2 * right] = shifted[2 * right + 1] - 1e-6
    one_flip = fidelity(groups, fp32, shifted, FidelityGate())
    assert math.isclose(one_flip.fp32_accuracy - one_flip.accuracy, 0.01)
    assert one_flip.reason is not None and "accuracy" in one_flip.reason and "spearman" not in one_flip.reason
    assert fidelity(groups, fp32, shifted, FidelityGate(max_accuracy_change=0.01)).reason is None


def test_length_controlled_split_and_intervals_per_source():
    # chosen longer: right, right, wrong; chosen shorter: wrong, wrong; same length: right (in neither split)
    groups = [group("aa", "b"), group("cc", "d"), group("ee", "f"), group("g", "hh"), group("i", "jj"), group("k", "l")]
    scores = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    result = metrics(pairs_from_scores(groups, scores))
    longer, shorter = result["length_controlled"]["chosen_longer"], result["length_controlled"]["chosen_shorter"]
    assert longer["count"] == 3 and math.isclose(longer["accuracy"], 2 / 3)
    assert shorter["count"] == 2 and shorter["accuracy"] == 0.0 == shorter["accuracy_high"]
    assert longer["accuracy_low"] <= longer["accuracy"] <= longer["accuracy_high"]
    source = result["by_source"]["s"]
    assert source["accuracy"] == 0.5 and source["accuracy_low"] < 0.5 < source["accuracy_high"]
    assert "best_of_n" not in result  # pairs only
    assert "chosen is shorter 0.000" in format_table(result)


def test_best_of_n_counts_a_hit_only_when_the_best_scores_highest_and_shares_a_tie():
    def ranked(n: int) -> PreferenceGroup:  # response 0 best, then 1, 2, ...: every pair compared
        comparisons = tuple(Comparison(i, j) for i in range(n) for j in range(i + 1, n))
        return PreferenceGroup("p", tuple(f"r{i}" for i in range(n)), comparisons, "k")

    only_some = PreferenceGroup("p", ("a", "b", "c"), (Comparison(0, 1), Comparison(2, 1)), "k")  # no single best
    groups = [ranked(4), ranked(4), ranked(3), only_some, group("x", "y")]
    scores = np.array(
        [
            *[4.0, 3.0, 2.0, 1.0],  # hit
            *[3.0, 1.0, 4.0, 2.0],  # the best is second: a miss, though it wins 2 of its 3 pairs
            *[1.0, 1.0, 0.0],  # tied for the top with one other: half a hit, as RewardBench 2 counts it
            *[0.0, 0.0, 0.0],
            *[1.0, 0.0],
        ]
    )
    result = metrics(pairs_from_scores(groups, scores))
    best = result["best_of_n"]
    assert best["count"] == 3 and math.isclose(best["accuracy"], (1 + 0 + 1 / 2) / 3)
    assert math.isclose(best["chance"], (1 / 4 + 1 / 4 + 1 / 3) / 3)
    assert "best-of-N" in format_table(result)


def test_best_of_solutions_against_random_and_oracle(tmp_path):
    from arbiter.training.best_of_solutions import best_of_solutions, load_questions

    rows = [
        {
            "question": "q1",
            "solutions": [{"solution": "a", "is_correct": False}, {"solution": "bbb", "is_correct": True}],
        },
        {
            "question": "q2",
            "solutions": [{"solution": "ccc", "is_correct": False}, {"solution": "d", "is_correct": True}],
        },
        {
            "question": "q3",
            "solutions": [{"solution": "ee", "is_correct": True}, {"solution": "ff", "is_correct": False}],
        },
        {
            "question": "q4",
            "solutions": [{"solution": "g", "is_correct": False}, {"solution": "h", "is_correct": False}],
        },
        {"question": "q5", "solutions": [{"solution": "only one", "is_correct": True}]},  # no choice: left out
    ]
    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = load_questions(path)
    assert len(questions) == 4

    def longest(prompts, responses):  # a scorer whose every pick is known: the longest solution
        return np.array([float(len(r)) for r in responses])

    report = best_of_solutions(questions, longest)
    # picks: right, wrong, a tie of one right and one wrong (half), wrong (a tie of two wrong)
    assert math.isclose(report["reward_model"]["accuracy"], 1.5 / 4)
    assert math.isclose(report["random"], (0.5 + 0.5 + 0.5 + 0) / 4) and report["oracle"] == 0.75
    assert report["questions"] == 4 and report["solutions_per_question"] == 2.0


def test_sections_weight_subsets_by_their_counts_and_average_sections(tmp_path):
    from arbiter.training.section_scores import SectionTable, check_subsets, format_sections, section_scores

    table = SectionTable(name="t", sections={"Chat": {"a": 100, "b": 300}, "Safety": {"c": 1}, "Code": {"z": 1}})
    # a: 3 of 4 right; b: 1 of 2; c (a source: its pairs have no subset): 2 of 2; d is in no section
    rows = [("a", 1), ("a", 1), ("a", 1), ("a", -1), ("b", 1), ("b", -1), ("c", 1), ("c", 1), ("d", -1)]
    groups = [
        group("x", "y", "c", None, f"q{i}") if subset == "c" else group("x", "y", "s", subset, f"q{i}")
        for i, (subset, _) in enumerate(rows)
    ]
    scores = np.array([v for _, sign in rows for v in (float(sign), 0.0)])
    report = section_scores(pairs_from_scores(groups, scores), table)
    chat = (0.75 * 100 + 0.5 * 300) / 400
    assert math.isclose(report["sections"]["Chat"]["score"], chat)
    assert report["sections"]["Safety"]["score"] == 1.0
    assert math.isclose(report["score"], (chat + 1.0) / 2)  # sections count equally, whatever their size
    assert report["absent_sections"] == ["Code"] and report["unmapped"] == ["d"]
    for part in (report, report["sections"]["Chat"]):
        assert part["score_low"] <= part["score"] <= part["score_high"]
    assert report["score_low"] < report["score_high"]  # a and b vary under resampling
    text = format_sections(report)
    assert "SCORE" in text and "Code" in text and "d" in text
    check_subsets(table, groups)
    with pytest.raises(ValueError, match="none of its subsets"):
        check_subsets(table, [group("x", "y", "s", "q"), group("x", "y", "s2")])


def test_rewardbench_tables_and_best_of_n_sections():
    from arbiter.training.section_scores import builtin_tables, check_subsets, load_table, section_scores

    assert builtin_tables() == ["rewardbench", "rewardbench-2"]
    v1 = load_table("rewardbench")
    assert list(v1.sections) == ["Chat", "Chat Hard", "Safety", "Reasoning"]
    assert (
        v1.sections["Reasoning"]["math-prm"]
        == 984
        == sum(v for k, v in v1.sections["Reasoning"].items() if k != "math-prm")
    )
    assert len(v1.subsets()) == 23
    safety = {"refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 154,
              "xstest-should-respond": 250, "donotanswer": 136}  # fmt: skip
    assert v1.sections["Safety"] == safety  # RewardBench's counts since its September 2024 xstest fix
    assert sum(sum(s.values()) for s in v1.sections.values()) == 2985 + 984 - 447  # its subsets' sizes, math upweighted

    v2 = load_table("rewardbench-2")
    assert v2.metric == "best_of_n" and len(v2.sections) == 5

    def four(subset: str) -> PreferenceGroup:  # one chosen, three rejected, as RewardBench 2 stores them
        return PreferenceGroup("p", ("c", "r1", "r2", "r3"), tuple(Comparison(0, j) for j in (1, 2, 3)), "rb2", subset)

    groups = [four("Math"), four("Math"), four("Focus")]
    scores = np.array([*[4.0, 1.0, 2.0, 3.0], *[2.0, 3.0, 1.0, 0.0], *[1.0, 0.0, 0.0, 0.0]])  # hit, miss, hit
    report = section_scores(pairs_from_scores(groups, scores), v2)
    assert report["sections"]["Math"]["score"] == 0.5 and report["sections"]["Focus"]["score"] == 1.0
    assert report["score"] == 0.75
    assert set(report["absent_sections"]) == {"Factuality", "Precise IF", "Safety"}
    pairs_only = [group("c", "r", "rb2", "Math")]
    with pytest.raises(ValueError, match="no group of 3"):  # best-of-N needs K-wise groups
        check_subsets(v2, pairs_only)
