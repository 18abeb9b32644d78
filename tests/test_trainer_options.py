"""The trainer's options, each on a known answer: pooling, frozen-and-cached lower blocks, truncation, balancing."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from arbiter import weights
from arbiter.bundle.render import pad_batch
from arbiter.data.schema import Comparison, PreferenceGroup
from arbiter.data.sources import SourceSpec
from arbiter.training.batching import encode_groups
from arbiter.training.config import TrainConfig
from arbiter.training.frozen_layers import LowerStates, freeze_lower, layer_stack
from arbiter.training.model import build_reward_model, default_pooling
from arbiter.training.split import load_preferences
from arbiter.training.truncation import format_truncation, truncation_report

ENCODER, DECODER = "sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M-Instruct"
TEXTS = [
    ("What is the capital of France?", "Paris."),
    ("Say something kind.", "You are doing great, and your work matters a lot to the people around you."),
    ("Short?", "No."),
]


@functools.cache
def load(name: str, pooling: str = "auto", max_length: int = 128):
    torch.manual_seed(0)
    model, tokenizer = build_reward_model(name, max_length=max_length, pooling=pooling)  # type: ignore[arg-type]
    return model.eval(), model.input_builder(tokenizer)


def test_pooling_follows_the_sentence_encoders_own_config():
    assert default_pooling(weights.resolve(ENCODER), "encoder") == "mean"  # its 1_Pooling says mean tokens
    assert default_pooling(weights.resolve(DECODER), "decoder") == "last_token"


def test_a_folder_without_a_pooling_config_reads_the_first_token(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert default_pooling(str(tmp_path), "encoder") == "first_token"
    (tmp_path / "modules.json").write_text(json.dumps([{"path": "1_Pooling", "type": "x.models.Pooling"}]))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert default_pooling(str(tmp_path), "encoder") == "first_token"


@torch.no_grad()
def test_mean_pooling_is_the_masked_mean_of_the_last_states():
    model, builder = load(ENCODER)
    assert model.spec.pooling == "mean"
    sequences = [builder.encode(p, r).ids for p, r in TEXTS]
    ids, mask = (torch.from_numpy(a) for a in pad_batch(sequences, model.spec.pad_token_id, "right"))
    hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    by_hand = torch.stack([model.head(hidden[i, : len(s)].mean(0)).squeeze(-1) for i, s in enumerate(sequences)])
    assert torch.allclose(model(ids, mask), by_hand, atol=1e-5)
    first, _ = load(ENCODER, "first_token")
    assert first.spec.pooling == "first_token"
    assert not torch.allclose(first(ids, mask), by_hand, atol=1e-3)


@pytest.mark.parametrize("name", [ENCODER, DECODER])
def test_replaying_cached_lower_blocks_scores_as_the_whole_network(name):
    model, builder = load(name)
    model = copy.deepcopy(model)
    sequences = [builder.encode(p, r).ids for p, r in TEXTS]
    ids, mask = (torch.from_numpy(a) for a in pad_batch(sequences, model.spec.pad_token_id, model.spec.padding_side))
    with torch.no_grad():
        whole = model(ids, mask)
    lower, states = LowerStates.compute(model, 2, sequences, batch_tokens=40)  # several batches, sorted by length
    assert [len(s) for s in states] == [len(s) for s in sequences]
    assert not any(type(b).__name__ == "_PassThrough" for b in layer_stack(model.backbone))
    with torch.no_grad(), lower.replayed(lower.padded(states)):
        replayed = model(ids, mask)
    assert torch.allclose(replayed, whole, atol=2e-3), (replayed, whole)  # float16 cache: about 5e-4 relative
    with torch.no_grad():
        assert torch.equal(model(ids, mask), whole)  # the real blocks are back after the replay


def test_freezing_keeps_the_lower_blocks_and_embeddings_fixed_and_trains_the_rest():
    model, builder = load(ENCODER)
    model = copy.deepcopy(model).train()
    freeze_lower(model.backbone, 4)
    stack = layer_stack(model.backbone)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sequences = [builder.encode(p, r).ids for p, r in TEXTS]
    ids, mask = (torch.from_numpy(a) for a in pad_batch(sequences, model.spec.pad_token_id, "right"))
    model(ids, mask).sum().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    frozen_names = {f"backbone.{n}" for n, _ in model.backbone.named_parameters() if "embed" in n}
    frozen_names |= {n for n, p in model.named_parameters() if any(p is q for b in stack[:4] for q in b.parameters())}
    assert frozen_names and not changed & frozen_names
    assert any(".layer.5." in n for n in changed) and "head.weight" in changed
    with pytest.raises(ValueError, match="between 1 and 5"):
        freeze_lower(model.backbone, 6)


def test_freezing_and_lora_are_refused_together():
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(freeze_layers=2, lora_r=8)


def test_truncation_report_counts_where_each_pair_was_cut():
    _, builder = load(ENCODER, max_length=16)
    long_prompt = "word " * 40
    groups = [
        PreferenceGroup("Hi?", ("Hello.", "Hey."), (Comparison(0, 1),), "a"),  # nothing cut
        PreferenceGroup(long_prompt, ("Hello.", "Hey."), (Comparison(1, 0),), "a"),  # both prompts cut
        PreferenceGroup("Hi?", ("Hello.", "word " * 40, "Yo."), (Comparison(0, 1), Comparison(2, 0)), "b"),
    ]
    report = truncation_report(encode_groups(groups, builder))
    assert report == {
        "a": {"responses": 4, "prompt_cut": 2, "response_cut": 0, "pairs": 2, "pairs_cut": 1},
        "b": {"responses": 3, "prompt_cut": 0, "response_cut": 1, "pairs": 2, "pairs_cut": 1},
    }
    table = format_truncation(report, 16)
    assert "max_length 16" in table and "1 (50.0%)" in table and "1 (33.3%)" in table


def _write(path: Path, prompts: range) -> SourceSpec:
    rows = [{"prompt": f"question {i}", "chosen": "good", "rejected": "bad"} for i in prompts]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return SourceSpec(path=str(path))


def test_balancing_sources_shows_each_as_often_as_the_largest(tmp_path):
    big, small = _write(tmp_path / "big.jsonl", range(400)), _write(tmp_path / "small.jsonl", range(1000, 1050))
    plain = load_preferences([big, small], eval_fraction=0.1)
    balanced = load_preferences([big, small], eval_fraction=0.1, balance_sources=True)
    count = lambda data, source: sum(g.source == source for g in data.train)  # noqa: E731
    assert count(balanced, "big") == count(plain, "big")
    assert count(balanced, "small") == count(plain, "big")  # resampled to the largest
    assert {g.prompt_key for g in balanced.train if g.source == "small"} == {
        g.prompt_key for g in plain.train if g.source == "small"
    }  # every small-source prompt is still there, and no eval prompt came in
    assert [g.prompt_key for g in balanced.eval] == [g.prompt_key for g in plain.eval]
    assert np.isclose(count(plain, "small") / count(plain, "big"), 50 / 400, atol=0.03)


def test_a_run_with_frozen_cached_blocks_trains_only_the_top(preferences, tmp_path):
    from arbiter.training.checkpoint import load_checkpoint
    from arbiter.training.train import train

    config = TrainConfig(
        data=[SourceSpec(path=str(preferences / "hh_rlhf_harmless.jsonl"))],
        max_groups_per_source=48,
        max_length=48,
        freeze_layers=5,
        batch_size=8,
        max_steps=4,
        lr=1e-3,
        log_every=2,
        out=tmp_path / "run",
    )
    run = train(config)
    truncation = json.loads((run / "truncation.json").read_text())
    assert truncation["train"]["hh_rlhf_harmless"]["pairs"] == 48 and truncation["eval"]
    trained = dict(load_checkpoint(run / "checkpoint")[0].named_parameters())
    base, _ = load(ENCODER)
    for name, value in base.named_parameters():
        top = ".layer.5." in name or name == "head.weight"  # a pairwise loss has no gradient for the head's bias
        assert torch.equal(trained[name], value) != top, name


def test_every_ablation_is_a_valid_recipe_over_the_default():
    import yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    default = yaml.safe_load((root / "default.yaml").read_text())
    ablations = sorted((root / "ablations").glob("*.yaml"))
    assert ablations
    for path in ablations:
        changed = yaml.safe_load(path.read_text())
        assert changed and set(changed) <= set(TrainConfig.model_fields), path.name
        assert any(default.get(k) != v for k, v in changed.items()), f"{path.name} changes nothing of the default"
        TrainConfig.model_validate({**default, **changed})
