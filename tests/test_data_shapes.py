"""Every row shape users have, the bad-row accounting, file formats, hub loading, mixing and the split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arbiter.data.load import load_source
from arbiter.data.shapes import BadRow, parse_row
from arbiter.data.sources import SourceSpec
from arbiter.training.split import is_eval, load_preferences

CHAT = [{"role": "user", "content": "Hi?"}]


def test_pairwise_string_prompt_with_margin_and_strength():
    g = parse_row({"prompt": "2+2?", "chosen": "4", "rejected": "5", "margin": 0.5, "preference_strength": 0.9}, "s")
    assert g.prompt == "2+2?" and g.responses == ("4", "5")
    (c,) = g.comparisons
    assert (c.winner, c.loser, c.margin, c.strength) == (0, 1, 0.5, 0.9)


def test_trl_conversational_explicit_and_implicit_prompt():
    explicit = parse_row(
        {
            "prompt": CHAT,
            "chosen": [{"role": "assistant", "content": "Hello"}],
            "rejected": [{"role": "assistant", "content": "Go away"}],
        },
        "s",
    )
    assert explicit.prompt == CHAT and explicit.responses == ("Hello", "Go away")
    implicit = parse_row(
        {
            "chosen": [*CHAT, {"role": "assistant", "content": "Hello"}],
            "rejected": [*CHAT, {"role": "assistant", "content": "Go away"}],
        },
        "s",
    )
    assert implicit.prompt == CHAT and implicit.responses == ("Hello", "Go away")


def test_hh_rlhf_transcript_multi_turn():
    prefix = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I bake bread?"
    g = parse_row({"chosen": prefix + "\n\nAssistant: Use flour.", "rejected": prefix + "\n\nAssistant: No."}, "hh")
    assert g.prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How do I bake bread?"},
    ]
    assert g.responses == ("Use flour.", "No.")


def test_kwise_ranking_makes_all_pairs_and_skips_tied_ranks():
    g = parse_row({"prompt": "p", "responses": ["a", "b", "c", "d"], "ranking": [2, 1, 3, 3]}, "s")
    pairs = {(c.winner, c.loser) for c in g.comparisons}
    assert pairs == {(1, 0), (0, 2), (0, 3), (1, 2), (1, 3)}  # c and d tie: no pair
    assert g.to_row()["ranking"] == [2, 1, 3, 3]


def test_rewardbench_2_rows_are_one_group_with_every_chosen_above_every_rejected():
    row = {"id": "7", "prompt": "2+2?", "chosen": ["4"], "rejected": ["5", "22", "four?"], "subset": "Math"}
    g = parse_row(row, "rb2")
    assert g.responses == ("4", "5", "22", "four?") and g.subset == "Math"
    assert {(c.winner, c.loser) for c in g.comparisons} == {(0, 1), (0, 2), (0, 3)}
    ties = parse_row({"prompt": "a colour?", "chosen": ["red", "blue"], "rejected": ["seven"], "subset": "Ties"}, "rb2")
    assert {(c.winner, c.loser) for c in ties.comparisons} == {(0, 2), (1, 2)}  # the two correct ones are not ordered


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "p", "chosen": "a"}, "missing_field"),
        ({"chosen": "a", "rejected": "b"}, "missing_field"),
        ({"prompt": "p", "chosen": " ", "rejected": "b"}, "empty_response"),
        ({"prompt": "p", "chosen": "same", "rejected": "same "}, "identical_responses"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "preference_strength": 0.5}, "tie"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "tie": True}, "tie"),
        ({"prompt": "p", "responses": ["a", "b"], "ranking": [1, 1]}, "tie"),
        ({"prompt": "p", "responses": ["a", "b"], "ranking": [1]}, "bad_ranking"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": -1}, "bad_margin"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "preference_strength": 0.2}, "bad_margin"),
        ({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b"}, "unparsable_transcript"),
        ({"chosen": "Human: hi", "rejected": "Human: hi there"}, "unparsable_transcript"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, "bad_type"),
        ({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, "bad_type"),
    ],
)
def test_bad_rows_are_named(row, reason):
    with pytest.raises(BadRow) as info:
        parse_row(row, "s")
    assert info.value.reason == reason


GOOD = [
    {"prompt": "q1", "chosen": "good", "rejected": "bad"},
    {"prompt": CHAT, "chosen": "hello", "rejected": "bye", "margin": 1.0},
    {"prompt": "q3", "responses": ["x", "y", "z"], "ranking": [1, 2, 3]},
]
BAD = [
    {"prompt": "q4", "chosen": "same", "rejected": "same"},
    {"prompt": "q5", "chosen": "", "rejected": "b"},
]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        # Parquet needs one type per column: messages and rankings travel as JSON text, as in CSV.
        table = {
            k: [json.dumps(r[k]) if isinstance(r.get(k), list) else r.get(k) for r in rows]
            for k in ("prompt", "chosen", "rejected", "responses", "ranking", "margin")
        }
        pq.write_table(pa.table(table), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["prompt", "chosen", "rejected", "responses", "ranking", "margin"])
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_file_formats_read_the_same_groups_and_count_bad_rows(tmp_path, suffix):
    path = _write(tmp_path / f"prefs{suffix}", GOOD + BAD)
    groups, report = load_source(SourceSpec(path=str(path)))
    assert [g.responses for g in groups] == [("good", "bad"), ("hello", "bye"), ("x", "y", "z")]
    assert groups[1].prompt == CHAT and groups[1].comparisons[0].margin == 1.0
    assert report.groups == 3 and report.pairs == 1 + 1 + 3
    expected_bad = {"identical_responses": 1, "empty_response": 1}
    if suffix == ".jsonl":
        expected_bad["unparsable_row"] = 1
    assert dict(report.bad) == expected_bad
    assert report.rows == report.groups + sum(report.bad.values())


def test_hub_dataset_name_goes_through_datasets(tmp_path, monkeypatch):
    """A name that is not a file is handed to datasets.load_dataset: offline here, a local dataset folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "my-org--prefs"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD[:2]))
    groups, report = load_source(SourceSpec(path=str(folder), split="train"))
    assert report.rows == 2 and [g.responses for g in groups] == [("good", "bad"), ("hello", "bye")]


def test_summary_table_reports_reasons(tmp_path):
    path = _write(tmp_path / "p.jsonl", GOOD + BAD)
    table = load_preferences([SourceSpec(path=str(path))], eval_fraction=0.0).summary_table()
    assert "identical_responses" in table and "empty_response" in table and "unparsable_row" in table


def test_split_is_by_prompt_and_deterministic(preferences):
    spec = SourceSpec(path=str(preferences / "finegrained_rlhf_qa.jsonl"))
    first = load_preferences([spec], eval_fraction=0.2)
    again = load_preferences([spec], eval_fraction=0.2, seed=7)
    train_prompts = {g.prompt_key for g in first.train}
    eval_prompts = {g.prompt_key for g in first.eval}
    assert eval_prompts and train_prompts and not train_prompts & eval_prompts
    assert {g.prompt_key for g in again.eval} == eval_prompts  # independent of seed and row order
    assert 0.1 < len(first.eval) / (len(first.eval) + len(first.train)) < 0.3
    assert all(is_eval(g, 0.2) for g in first.eval)


def test_weights_mix_sources(tmp_path):
    a = _write(tmp_path / "a.json", [{"prompt": f"a{i}", "chosen": "x", "rejected": "y"} for i in range(40)])
    b = _write(tmp_path / "b.json", [{"prompt": f"b{i}", "chosen": "x", "rejected": "y"} for i in range(40)])
    data = load_preferences([SourceSpec(path=str(a), weight=2.0), SourceSpec.parse(f"{b},weight=0.5")], 0.0)
    assert sum(g.source == "a" for g in data.train) == 80
    assert sum(g.source == "b" for g in data.train) == 20


def test_source_spec_parse_rejects_unknown_options():
    with pytest.raises(ValueError, match="bad data option"):
        SourceSpec.parse("x.jsonl,weigth=2")
