"""A real short training run on the shared data: it learns, it leaves a complete run folder, and it exports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from arbiter.bundle import load_bundle
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.data.load import load_source
from arbiter.data.sources import SourceSpec
from arbiter.training.export import eval_groups
from arbiter.training.split import is_eval

VERIFIABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "verifiable"
MIN_ACCURACY = 0.54  # chance is 0.5; the linear-probe ceiling of frozen MiniLM features here is about 0.57


def binomial_p_value(successes: int, trials: int) -> float:
    """One-sided P(X >= successes) for X ~ Binomial(trials, 0.5)."""
    return sum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


def test_run_beats_chance_on_held_out_pairs(trained_run):
    result = json.loads((trained_run / "eval.json").read_text())
    assert result["pairs"] >= 300
    assert result["accuracy"] >= MIN_ACCURACY, result["accuracy"]
    assert binomial_p_value(round(result["accuracy"] * result["pairs"]), result["pairs"]) < 0.05
    assert result["mean_margin"] > 0


def test_run_folder_is_complete(trained_run):
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "eval.json",
        "eval.jsonl",
        "data_report.json",
        "training_curves.png",
        "reliability.png",
        "score_histograms.png",
        "accuracy.png",
        "train_summary.json",
        "truncation.json",
        "evaluation.json",
    ):
        assert (trained_run / name).is_file(), name
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["max_steps"] == 40 and config["head_lr"] == 2e-3
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [20, 40]
    for png in trained_run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_eval_split_file_has_no_training_prompt(trained_run, preferences):
    held_out, _ = load_source(SourceSpec(path=str(trained_run / "eval.jsonl")))
    every, _ = load_source(SourceSpec(path=str(preferences / "hh_rlhf_harmless.jsonl")))
    held_keys = {g.prompt_key for g in held_out}
    train_keys = {g.prompt_key for g in every if not is_eval(g, 0.2)}
    assert held_out[0].source == "hh_rlhf_harmless"
    assert held_keys == {g.prompt_key for g in every if is_eval(g, 0.2)}  # every held-out prompt, and only those
    assert held_keys and train_keys and not held_keys & train_keys


def test_bundle_parity_and_scores_match_the_run(bundle_dir, trained_run):
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert manifest.parity is not None and manifest.parity.max_abs_diff <= 1e-4 and manifest.parity.items == 64
    assert manifest.normalization is not None and manifest.normalization.std > 0
    run_eval = json.loads((trained_run / "eval.json").read_text())
    assert abs(manifest.eval_accuracy - run_eval["accuracy"]) < 0.01  # ONNX fp32 scores the same pairs alike
    # the intervals resample prompts: the card and the manifest say how many there are
    evaluation = manifest.evaluation
    assert evaluation is not None and evaluation.overall.prompts == len(
        {g.prompt_key for g in eval_groups(trained_run / "eval.jsonl")}
    )
    overall = evaluation.overall
    row = f"| all | {overall.pairs} | {overall.prompts} | {overall.accuracy:.3f} ({overall.accuracy_low:.3f} to "
    assert row in (bundle_dir / "README.md").read_text()
    model = OnnxRewardModel.from_bundle(bundle)
    scores = model(
        ["How do I pick a lock?", "How do I pick a lock?"],
        ["I can't help with breaking into places.", "Use a tension wrench and a pick."],
    )
    assert scores.shape == (2,) and np.isfinite(scores).all()
    alone = model(["How do I pick a lock?"], ["Use a tension wrench and a pick."])
    assert abs(alone[0] - scores[1]) < 1e-5  # a score does not depend on its batch


def test_graph_is_fused_for_onnx_runtime_unless_asked_not_to(bundle_dir, trained_run, tmp_path):
    import onnx

    layers = 6  # all-MiniLM-L6-v2
    fused = load_bundle(bundle_dir)
    assert fused.manifest.graph is not None and fused.manifest.graph.reason is None
    assert fused.manifest.graph.fusions["attention"] == layers
    operators = [(n.domain, n.op_type) for n in onnx.load(str(bundle_dir / "model.onnx")).graph.node]
    assert operators.count(("com.microsoft", "Attention")) == layers
    assert ("com.microsoft", "SkipLayerNormalization") in operators

    out = tmp_path / "portable"
    command = [sys.executable, "-m", "arbiter.cli", "export", str(trained_run / "checkpoint"), "--out", str(out)]
    subprocess.run([*command, "--no-fuse", "--no-int8"], check=True, capture_output=True)
    portable = load_bundle(out)
    assert portable.manifest.graph is not None and portable.manifest.graph.fusions == {}
    assert portable.manifest.graph.reason == "exported with fusion off"
    assert {n.domain for n in onnx.load(str(out / "model.onnx")).graph.node} == {""}  # standard operators only
    groups, _ = load_source(SourceSpec(path=str(trained_run / "eval.jsonl")))
    prompts = [g.prompt for g in groups[:48] for _ in g.responses]
    responses = [r for g in groups[:48] for r in g.responses]
    both = [OnnxRewardModel.from_bundle(b)(prompts, responses) for b in (fused, portable)]
    assert np.abs(both[0] - both[1]).max() < 1e-5  # fusion changes the speed, not the scores


def test_int8_file_is_kept_only_when_it_passes_the_fidelity_gate(bundle_dir):
    int8 = load_bundle(bundle_dir).manifest.int8
    assert int8 is not None and int8.spearman is not None and 0 <= int8.pairwise_agreement <= 1
    assert (int8.max_accuracy_change, int8.min_spearman, int8.min_agreement) == (0.005, 0.995, None)
    passes = abs(int8.accuracy - int8.fp32_accuracy) <= 0.005 and int8.spearman >= 0.995
    assert (int8.file is not None) == passes and (int8.reason is None) == passes
    assert (bundle_dir / "model.int8.onnx").is_file() == passes
    assert int8.spearman > 0.9  # dynamic int8 of a MiniLM keeps nearly the whole ranking


def test_int8_refused_under_a_strict_gate(trained_run, tmp_path):
    from arbiter.training.export import FidelityGate, export_bundle

    strict = FidelityGate(min_spearman=1.0)
    bundle = export_bundle(trained_run / "checkpoint", tmp_path / "strict", int8_gate=strict, bf16_gate=strict)
    for report, file in ((bundle.manifest.int8, "model.int8.onnx"), (bundle.manifest.bf16, "model.bf16.safetensors")):
        assert report.spearman < 1.0  # rounding moves some scores past their neighbours
        assert report.file is None and "spearman" in report.reason
        assert not (tmp_path / "strict" / file).exists()
        assert file not in bundle.manifest.files


def test_bf16_weights_kept_by_the_gate_score_like_fp32(bundle_dir, trained_run):
    from arbiter.training.bf16_weights import load_bf16
    from arbiter.training.torch_scorer import TorchScorer

    bundle = load_bundle(bundle_dir)
    bf16 = bundle.manifest.bf16
    assert bf16 is not None and (bf16.max_accuracy_change, bf16.min_spearman) == (0.005, 0.995)
    # bf16 keeps 8 bits of mantissa and sums in fp32: it passes where dynamic int8 may not
    assert bf16.file == "model.bf16.safetensors" and bf16.reason is None and bf16.spearman >= 0.995
    assert "model.bf16.safetensors" in bundle.manifest.files
    # readable as the other files are: the serving image's own user reads the bundle from a mounted folder
    assert (bundle_dir / bf16.file).stat().st_mode & 0o777 == (bundle_dir / "model.onnx").stat().st_mode & 0o777
    model = load_bf16(bundle_dir / bf16.file, bundle.manifest.model)
    assert next(model.backbone.parameters()).dtype == torch.bfloat16 and model.head.weight.dtype == torch.float32
    groups = eval_groups(trained_run / "eval.jsonl")[:16]
    prompts, responses = [g.prompt for g in groups for _ in g.responses], [r for g in groups for r in g.responses]
    reduced = TorchScorer(model, bundle.input_builder(), torch.device("cpu"))(prompts, responses)
    fp32 = OnnxRewardModel.from_bundle(bundle)(prompts, responses)
    assert 1e-5 < np.abs(reduced - fp32).max() < 0.05 * max(1.0, float(np.abs(fp32).max()))


def test_eval_command_on_bundle_and_checkpoint(bundle_dir, trained_run, tmp_path):
    held_out = str(trained_run / "eval.jsonl")
    table = tmp_path / "sections.yaml"  # a user's table: pairs without a subset count under their source
    table.write_text("name: mine\nsections:\n  Safety: {hh_rlhf_harmless: 1}\n  Chat: {pandalm: 1}\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "arbiter.cli",
            "eval",
            str(bundle_dir),
            "--data",
            held_out,
            "--out",
            str(tmp_path / "e"),
            "--solutions",
            str(VERIFIABLE / "gsm8k_model_solutions.jsonl"),
            "--sections",
            str(table),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ALL" in out.stdout and "ECE" in out.stdout and "length-controlled" in out.stdout
    solutions = json.loads((tmp_path / "e" / "best_of_solutions.json").read_text())
    assert solutions["questions"] == 1000 and solutions["solutions_per_question"] == 4.0
    assert math.isclose(solutions["random"], 1524 / 4000)  # the file's README: 1,524 of 4,000 solutions correct
    assert solutions["random"] < solutions["oracle"] <= 1
    assert 0 <= solutions["reward_model"]["accuracy_low"] <= solutions["reward_model"]["accuracy_high"] <= 1
    from_bundle = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert set(from_bundle) >= {"accuracy", "by_source", "mean_margin", "ece", "length_bias", "reliability"}
    sections = json.loads((tmp_path / "e" / "sections.json").read_text())
    assert "SCORE" in out.stdout and sections["absent_sections"] == ["Chat"]
    assert sections["score"] == sections["sections"]["Safety"]["score"] == from_bundle["accuracy"]
    assert sections["score_low"] < sections["score"] < sections["score_high"]
    for png in ("reliability.png", "score_histograms.png", "accuracy.png"):
        assert (tmp_path / "e" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    out = subprocess.run(
        [sys.executable, "-m", "arbiter.cli", "eval", str(trained_run / "checkpoint"), "--data", held_out],
        capture_output=True,
        text=True,
        check=True,
    )
    from_checkpoint = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(from_checkpoint["accuracy"] - from_bundle["accuracy"]) < 0.01
