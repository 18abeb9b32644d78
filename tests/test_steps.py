"""Stepwise data for process reward models: TRL's rows and their bad-row accounting, GSM8K's step labels from its
calculator annotations (rule by rule, on known answers, and on the shared file), how steps are encoded at the step
token, and the step metrics on known answers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from arbiter.bundle.steps import step_text
from arbiter.data.arithmetic_steps import label_solutions
from arbiter.data.sources import SourceSpec
from arbiter.data.steps import StepwiseExample, load_stepwise
from arbiter.training.model import build_reward_model
from arbiter.training.step_metrics import auc, step_metrics, stratified_auc
from arbiter.training.steps import collate_steps, encode_steps

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "verifiable" / "gsm8k_model_solutions.jsonl"
QUESTION = "Tom has 3 apples and buys 4 more. He gives 2 away. How many apples does he have?"
REFERENCE = "He has 3 + 4 = <<3+4=7>>7 apples.\nHe keeps 7 - 2 = <<7-2=5>>5.\nA: 5"


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_trl_stepwise_rows_and_bad_rows_by_reason(tmp_path: Path):
    good = {"prompt": "2+3*4?", "completions": ["3*4 = 12", "2 + 12 = 14"], "labels": [True, True]}
    rows = [
        good,
        {"prompt": [{"role": "user", "content": "1+1?"}], "completions": ["1+1 = 3"], "labels": [0]},
        {"prompt": "x", "completions": ["a", "b"], "labels": [True]},
        {"prompt": "x", "completions": ["a"], "labels": ["yes"]},
        {"prompt": "x", "completions": [], "labels": []},
        {"prompt": "x", "completions": ["a", " "], "labels": [True, False]},
        {"prompt": "x", "labels": [True]},
        "{not json",
    ]
    examples, report = load_stepwise(SourceSpec(path=str(_write(tmp_path / "steps.jsonl", rows))))
    assert [e.labels for e in examples] == [(True, True), (False,)]
    assert examples[1].prompt == [{"role": "user", "content": "1+1?"}] and examples[1].first_wrong == 0
    assert (report.rows, report.groups, report.pairs) == (8, 2, 3)
    assert dict(report.bad) == {"labels_mismatch": 1, "bad_label": 1, "no_steps": 1, "empty_step": 1,
                                "missing_field": 1, "unparsable_row": 1}  # fmt: skip
    again, _ = load_stepwise(SourceSpec(path=str(_write(tmp_path / "again.jsonl", [e.to_row() for e in examples]))))
    assert again == [StepwiseExample(e.prompt, e.steps, e.labels, "steps") for e in examples]


def test_gsm8k_labels_follow_the_documented_rules():
    right = "He has 3 + 4 = <<3+4=7>>7 apples.\nHe gives 2, so 7 - 2 = <<7-2=5>>5 are left.\nA: 5"
    solutions = [
        (right, True),  # rule 4: every step right
        ("He has 3 + 4 = <<3+4=8>>8 apples.\n8 - 2 = <<8-2=6>>6\nA: 6", False),  # rule 2: wrong arithmetic
        ("He has 3 + 4 = <<3+4=7>>7.\nThen 7 + 2 = <<7+2=9>>9\nA: 9", False),  # rule 5: 9 is no right value
        ("He has 3 + 4 = <<3+4=7>>7.\nA: 7", False),  # rule 5: every value right, so the answer's step is wrong
        ("He has 3 + 4 = <<3+4=7>>7 then\nhe writes <<7-2=5>>4\nA: 5", True),  # rule 6: copied 4 for 5, graded right
        ("He has x = <<x+1=2>>2\nA: 2", False),  # rule 6: not arithmetic
        ("He has some apples.\nA: 9", False),  # rule 6: nothing to locate the error by
    ]
    labelled, dropped = label_solutions(QUESTION, REFERENCE, solutions)
    assert [labels for _, labels in labelled] == [
        (True, True, True),
        (False, False, False),
        (True, False, False),
        (True, False),
    ]
    assert labelled[0][0] == tuple(right.split("\n"))
    assert dropped == ["right_answer_wrong_calculation", "unparsable_calculation", "no_calculations"]


def test_a_result_rounded_as_written_is_right_and_one_rounded_wrong_is_not():
    rounded = [("Each gets 10 / 3 = <<10/3=3.33>>3.33\nA: 3.33", True), ("Each gets <<10/3=3.4>>3.4\nA: 3.4", True)]
    labelled, dropped = label_solutions("Share 10 among 3.", None, rounded)
    assert [labels for _, labels in labelled] == [(True, True)] and dropped == ["right_answer_wrong_calculation"]


def test_calculations_are_evaluated_without_running_them():
    hostile = [
        ("<<__import__('os').system('touch /tmp/arbiter-pwned')=0>>0\nA: 0", False),
        ("<<9**9**9**9=1>>1\nA: 1", False),
        ("<<(lambda: 1)()=1>>1\nA: 1", False),
    ]
    labelled, dropped = label_solutions("What is 1?", None, hostile)
    assert labelled == [] and dropped == ["unparsable_calculation"] * 3
    assert not Path("/tmp/arbiter-pwned").exists()


def test_the_shared_gsm8k_file_becomes_consistent_step_labels():
    if not GSM8K.is_file():
        pytest.skip(f"shared data not found at {GSM8K}")
    examples, report = load_stepwise(SourceSpec(path=str(GSM8K)))
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    graded = {
        (r["question"], tuple(line.strip() for line in s["solution"].split("\n") if line.strip())): s["is_correct"]
        for r in rows
        for s in r["solutions"]
    }
    assert report.rows == len(rows)
    assert report.groups + sum(report.bad.values()) == sum(len(r["solutions"]) for r in rows)
    assert set(report.bad) <= {"right_answer_wrong_calculation", "unparsable_calculation", "no_calculations"}
    for e in examples:
        correct = graded[(e.prompt, e.steps)]
        assert all(e.labels) == correct  # a wrong answer has a wrong step; a right one none (rules 4, 5)
        first = e.first_wrong
        assert first is None or not any(e.labels[first:])  # everything after the first wrong step is wrong


@pytest.fixture(scope="module")
def prm_parts():
    model, tokenizer = build_reward_model("sentence-transformers/all-MiniLM-L6-v2", 48, step_token="<step>")
    return model, tokenizer, model.input_builder(tokenizer)


def test_the_step_token_is_added_once_and_read_at_every_step(prm_parts):
    model, tokenizer, builder = prm_parts
    reading = model.spec.steps
    assert reading is not None and reading.token == "<step>" and reading.token_id == len(tokenizer) - 1
    assert model.backbone.get_input_embeddings().weight.shape[0] == len(tokenizer)
    short = StepwiseExample("2+2?", ("2+2 = 4", "A: 4"), (True, True), "t")
    long = StepwiseExample("Count.", tuple(f"step {i} adds one more apple to the pile" for i in range(20)),
                           (True,) * 20, "t")  # fmt: skip
    holds = StepwiseExample("Q", ("a <step> b",), (True,), "t")
    left_out: Counter[str] = Counter()
    items = encode_steps([short, long, holds], builder, reading, left_out)
    assert left_out == {"step_token_in_text": 1}
    assert len(items[0].positions) == 2 and len(items[1].positions) < 20  # cut at 48 tokens: the first steps stay
    ids = items[0].ids[0]
    assert [ids[p] for p in items[0].positions] == [reading.token_id] * 2
    assert step_text(short.steps, "<step>") == "2+2 = 4<step>A: 4<step>"


def test_collated_steps_point_at_the_step_tokens_on_either_padding_side(prm_parts):
    model, _, builder = prm_parts
    reading = model.spec.steps
    examples = [StepwiseExample("Q", ("one", "two", "three"), (True, True, False), "t"),
                StepwiseExample("A longer question here?", ("only",), (False,), "t")]  # fmt: skip
    items = encode_steps(examples, builder, reading, Counter())
    for side in ("right", "left"):
        batch = collate_steps(items, 0, side, last_step_only=False)
        assert (batch.input_ids[batch.row, batch.position] == reading.token_id).all()
        assert batch.label.tolist() == [1.0, 1.0, 0.0, 0.0]
    last = collate_steps(items, 0, "right", last_step_only=True)
    assert last.label.tolist() == [0.0, 0.0] and last.row.tolist() == [0, 1]
    with torch.no_grad():  # a PRM scores every position; the step tokens' scores are read from that
        batch = collate_steps(items, 0, model.spec.padding_side, False)
        assert model(batch.input_ids, batch.attention_mask).shape == batch.input_ids.shape


def test_step_metrics_on_known_answers():
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, True, False, False])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert auc(np.array([0.1, 0.3, 0.2, 0.4]), np.array([True, True, False, False])) == 0.25
    # position 0: right 0.9 > wrong 0.1 (1 of 1 pair); position 1: right 0.2 < wrong 0.3 and 0.4 (0 of 2)
    labels = np.array([True, False, True, False, False])
    at = np.array([0, 0, 1, 1, 1])
    assert stratified_auc(np.array([0.9, 0.1, 0.2, 0.3, 0.4]), labels, at) == pytest.approx(1 / 3)
    examples = [
        StepwiseExample("q1", ("a", "b", "c"), (True, False, False), "t"),  # first wrong at 1
        StepwiseExample("q1", ("a", "b"), (True, True), "t"),
        StepwiseExample("q2", ("a", "b"), (False, False), "t"),
        StepwiseExample("q2", ("a",), (True,), "t"),
    ]
    probabilities = [np.array([0.9, 0.4, 0.2]), np.array([0.8, 0.7]), np.array([0.6, 0.3]), np.array([0.55])]
    m = step_metrics(examples, probabilities)
    assert (m["solutions"], m["steps"], m["wrong_steps"]) == (4, 8, 4)
    assert m["first_wrong"]["with_wrong_step"]["accuracy"] == 0.5  # q1's first found at 1; q2's predicted at 1, not 0
    assert m["first_wrong"]["all_right"]["accuracy"] == 1.0
    assert m["first_wrong"]["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    precision = m["first_wrong"]["precision"]  # two solutions with a predicted wrong step, q1's the right one
    assert (precision["count"], precision["accuracy"]) == (2, 0.5)
    best = m["best_of_n"]
    assert best["prompts"] == 2 and best["random"] == 0.5 and best["oracle"] == 1.0
    assert best["by_aggregate"]["min"]["accuracy"] == 1.0  # q1: min 0.7 beats 0.2; q2: 0.55 beats 0.3
    assert best["by_aggregate"]["mean"]["accuracy"] == 1.0
    assert best["by_aggregate"]["product"]["accuracy"] == 1.0
    assert best["by_aggregate"]["last"]["accuracy"] == 1.0
    # within a position: at 0, right 0.9 and 0.8 beat wrong 0.6, 0.55 does not; at 1, right 0.7 beats 0.4 and 0.3
    assert m["within_position_auc"]["auc"] == pytest.approx(4 / 5)
    assert m["step_accuracy"]["accuracy"] == pytest.approx(7 / 8)  # only q2's first step (0.6, wrong) misjudged


def test_a_short_prm_run_finds_wrong_steps_better_than_chance_and_than_position(prm_run: Path):
    m = json.loads((prm_run / "step_eval.json").read_text())
    assert m["solutions"] >= 150 and m["wrong_steps"] >= 200
    # wrong steps score lower than right ones, by a margin the interval holds
    assert m["step_auc"]["low"] > 0.58, m["step_auc"]
    # and not only because later steps are wrong more often: compared at the same index, right steps still win
    assert m["within_position_auc"]["low"] > 0.55, m["within_position_auc"]
    report = json.loads((prm_run / "truncation.json").read_text())
    assert report["max_length"] == 192 and report["left_out"].get("step_token_in_text", 0) == 0
    spec = json.loads((prm_run / "checkpoint" / "model_spec.json").read_text())
    assert spec["steps"]["token"] == "<step>"
