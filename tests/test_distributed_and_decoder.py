"""The same entry point under torchrun (2 CPU processes, gloo), and a decoder backbone with LoRA."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from arbiter.bundle import load_bundle


@pytest.fixture(scope="module")
def small_file(preferences, tmp_path_factory):
    rows = (preferences / "pandalm.jsonl").read_text().splitlines()[:120]
    path = tmp_path_factory.mktemp("data") / "small.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_two_process_ddp_run(small_file, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "arbiter.cli",
        "train",
        "--data",
        str(small_file),
        "--out",
        str(out),
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--max-length",
        "48",
        "--eval-fraction",
        "0.2",
        "--log-every",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if s["kind"] == "train"] == [1, 2, 3, 4]
    assert (out / "checkpoint" / "model_spec.json").is_file()


@pytest.mark.slow
def test_decoder_with_lora_and_checkpointing_exports_with_parity(small_file, tmp_path):
    from arbiter.data.sources import SourceSpec
    from arbiter.training.config import TrainConfig
    from arbiter.training.export import export_bundle
    from arbiter.training.train import train

    config = TrainConfig(
        data=[SourceSpec(path=str(small_file))],
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        max_length=64,
        batch_size=2,
        max_steps=2,
        lr=1e-4,
        lora_r=4,
        gradient_checkpointing=True,
        eval_fraction=0.2,
        max_groups_per_source=40,
        out=tmp_path / "smol",
    )
    run = train(config)
    spec = json.loads((run / "checkpoint" / "model_spec.json").read_text())
    assert (spec["architecture"], spec["pooling"], spec["padding_side"]) == ("decoder", "last_token", "left")
    assert spec["rendering"]["kind"] == "chat_template"
    assert not list((run / "checkpoint" / "backbone").glob("adapter_*")), "LoRA must be merged before export"
    bundle = export_bundle(run / "checkpoint", tmp_path / "smol-bundle", int8=False, bf16=False)
    assert bundle.manifest.parity.max_abs_diff <= 1e-4
    assert load_bundle(bundle.path).manifest.model.pad_token_id == spec["pad_token_id"]
