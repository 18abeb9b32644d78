"""The `arbiter` command: help a new user can follow, and user mistakes as messages, not tracebacks."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from arbiter.cli_options import given_flags
from arbiter.judge.cli import add_parsers as add_judge_parsers
from arbiter.judge.settings import JudgeSettings


def arbiter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arbiter.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", ["train", "eval", "export"])
def test_help(command):
    result = arbiter(command, "--help")
    assert result.returncode == 0 and "usage: arbiter" in result.stdout
    if command == "train":
        for flag in (
            "--data",
            "--base-model",
            "--use-margin",
            "--center-coef",
            "--lora-r",
            "--export",
            "--config",
        ):
            assert flag in result.stdout


def test_top_level_help_lists_commands():
    result = arbiter("--help")
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ") and line[4] != " "}
    expected = {
        "train",
        "eval",
        "export",
        "import",
        "serve",
        "label",
        "eval-judge",
        "db",
        "annotators",
        "annotations",
        "keys",
    }
    assert listed == expected


@pytest.mark.parametrize("command", ["serve", "label", "eval-judge"])
def test_every_judge_setting_is_the_same_flag_on_serve_label_and_eval_judge(command):
    result = arbiter(command, "--help")
    assert result.returncode == 0
    for name in JudgeSettings.model_fields:
        assert "--" + name.replace("_", "-") + " " in result.stdout, f"{command} lacks the flag of {name}"


def parsed_judge_command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_judge_parsers(parser.add_subparsers())
    return parser.parse_args(argv)


def test_label_keeps_its_former_judge_flag_names_as_aliases():
    former = ["--backend", "openai", "--model", "m", "--base-url", "http://x/v1", "--constitution", "c"]
    args = parsed_judge_command("label", "--pairs", "p.jsonl", "--out", "o.jsonl", *former, "--cache", "v.sqlite")
    assert given_flags(args, JudgeSettings) == {
        "judge_backend": "openai",
        "judge_model": "m",
        "judge_base_url": "http://x/v1",
        "default_constitution": "c",
        "judge_cache_path": "v.sqlite",
    }
    args = parsed_judge_command("eval-judge", "--data", "d.jsonl", "--judge-timeout-s", "5", "--constitutions", "a")
    assert given_flags(args, JudgeSettings) == {"judge_timeout_s": 5.0, "constitutions": ["a"]}


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response_a": "a", "response_b": "b"}) + "\n")
    return path


def test_label_without_a_judge_is_a_clear_error(pairs_file, tmp_path):
    result = arbiter("label", "--pairs", str(pairs_file), "--out", str(tmp_path / "o.jsonl"), "--judge-backend", "off")
    assert result.returncode == 2 and "needs a judge" in result.stderr and "Traceback" not in result.stderr


def test_label_with_an_unknown_constitution_is_a_clear_error(pairs_file, tmp_path):
    result = arbiter("label", "--pairs", str(pairs_file), "--out", str(tmp_path / "o.jsonl"), "--constitution", "nope")
    assert result.returncode == 2 and "no constitution named 'nope'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o.jsonl").exists()


def test_train_without_data_is_a_clear_error(tmp_path):
    result = arbiter("train", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "no training data" in result.stderr and "Traceback" not in result.stderr


def test_bad_data_option_is_a_clear_error(tmp_path):
    result = arbiter("train", "--data", "x.jsonl,weigth=2")
    assert result.returncode == 2 and "bad data option" in result.stderr


def test_eval_of_something_that_is_no_model(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    result = arbiter("eval", str(tmp_path), "--data", str(tmp_path / "p.jsonl"))
    assert result.returncode == 2 and "not a training checkpoint" in result.stderr
    result = arbiter("eval", str(tmp_path), "--data", str(tmp_path / "p.jsonl"), "--sections", "rewardbench")
    assert result.returncode == 2 and "none of its subsets" in result.stderr  # refused before anything is scored
    result = arbiter("eval", str(tmp_path), "--data", str(tmp_path / "p.jsonl"), "--sections", "nope")
    assert result.returncode == 2 and "rewardbench-2" in result.stderr


def test_onnx_scoring_path_does_not_import_torch():
    code = (
        "import sys, arbiter.bundle, arbiter.bundle.onnx_model, arbiter.bundle.render;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
