"""A seed makes a run reproducible; the mixed-precision path runs where the device allows it (bf16 on CPU)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from arbiter.data.sources import SourceSpec
from arbiter.training.config import TrainConfig
from arbiter.training.train import train


def tiny(data, out, **overrides) -> TrainConfig:
    settings = dict(
        data=[SourceSpec(path=str(data))], max_length=32, batch_size=4, max_steps=2, eval_fraction=0.2,
        max_groups_per_source=24, out=out, log_every=1,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def test_same_seed_same_weights_other_seed_other_weights(preferences, tmp_path):
    data = preferences / "pandalm.jsonl"
    first = train(tiny(data, tmp_path / "a", seed=3))
    again = train(tiny(data, tmp_path / "b", seed=3))
    other = train(tiny(data, tmp_path / "c", seed=4))
    head = lambda run: load_file(str(run / "checkpoint" / "head.safetensors"))["weight"]  # noqa: E731
    assert torch.equal(head(first), head(again))
    assert not torch.equal(head(first), head(other))
    losses = lambda run: [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(first) == losses(again)


def test_bf16_autocast_runs(preferences, tmp_path):
    run = train(tiny(preferences / "pandalm.jsonl", tmp_path / "bf16", precision="bf16"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in rows if r["kind"] == "train")  # finite, not NaN


def test_a_run_with_cached_frozen_blocks_is_reproducible(preferences, tmp_path):
    data = preferences / "pandalm.jsonl"
    first = train(tiny(data, tmp_path / "a", freeze_layers=4))
    again = train(tiny(data, tmp_path / "b", freeze_layers=4))
    a, b = (load_file(str(run / "checkpoint" / "backbone" / "model.safetensors")) for run in (first, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
