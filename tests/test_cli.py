"""The `arbiter` command: help a new user can follow, and user mistakes as messages, not tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest


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
    assert all(c in result.stdout for c in ("train", "eval", "export"))


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


def test_onnx_scoring_path_does_not_import_torch():
    code = (
        "import sys, arbiter.bundle, arbiter.bundle.onnx_model, arbiter.bundle.render;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
