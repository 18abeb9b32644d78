"""`arbiter import`: reward models written by other trainers' own code become bundles that score, over HTTP and gRPC,
what the original checkpoint scores under transformers' (or OpenRLHF's) own forward, within 1e-4. The checkpoints,
bundles and server are session fixtures (tests/reward_checkpoints.py)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from arbiter.bundle import FORMAT_VERSION
from tests.reward_checkpoints import ARCHITECTURES, TOLERANCE, original, run_import, scored, text_for

NAMES = [a.model_type for a in ARCHITECTURES] + ["minilm", "smollm2", "trl", "lora", "openrlhf"]


@pytest.mark.parametrize("name", NAMES)
def test_an_imported_model_scores_as_its_original_over_http(name: str, cases, served, conversations) -> None:
    case = cases[name]
    # One request: the server batches and pads these texts of different lengths together.
    body = scored(served, name, conversations)
    expected = np.array([case.reference(m, r)[case.score_index] for m, r in conversations])
    assert not any(body["truncated"])
    diff = float(np.abs(np.array(body["scores"]) - expected).max())
    print(f"{name}: max |arbiter over HTTP - original| {diff:.1e} over {len(expected)} texts")  # shown with -rP
    assert diff <= TOLERANCE, (name, body["scores"], expected.tolist())
    assert np.std(expected) > 1e-3  # the texts are told apart: a constant score would not pass for parity


def test_several_objectives_come_back_per_item_over_http_and_grpc(cases, served, conversations) -> None:
    from arbiter.clients.client import RewardClient

    case = cases["multi"]
    expected = np.array([case.reference(m, r) for m, r in conversations])
    body = scored(served, "multi", conversations)
    names = ["helpfulness", "harmlessness", "honesty"]
    got = np.array([[row[n] for n in names] for row in body["objectives"]])
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.allclose(body["scores"], got[:, 1])  # the objective named at import is the score
    with RewardClient(served.grpc_url) as client:
        answer = client.score([m for m, _ in conversations], [r for _, r in conversations], model="multi")
    assert answer.objectives is not None and set(answer.objectives[0]) == set(names)  # a proto map has no order
    assert np.abs(np.array([[row[n] for n in names] for row in answer.objectives]) - expected).max() <= TOLERANCE
    info = httpx.get(f"{served.url}/v1/models/multi").json()
    assert (info["objectives"], info["score_objective"], info["source_format"]) == (
        names,
        "harmlessness",
        "transformers",
    )


def test_openrlhf_normalization_comes_from_its_config(cases, served, conversations) -> None:
    case = cases["openrlhf"]
    manifest = json.loads((case.bundle / "manifest.json").read_text())
    assert manifest["source"]["format"] == "openrlhf" and manifest["model"]["pooling"] == "last_token"
    assert (manifest["normalization"]["mean"], manifest["normalization"]["std"]) == (0.25, 1.5)
    model = case.model  # type: ignore[attr-defined]
    tokenizer = AutoTokenizer.from_pretrained(case.bundle)
    model.normalize_reward = True  # how serve_rm --normalize_reward answers
    # OpenRLHF's __init__ copies config.mean/std into non-persistent buffers, which transformers 5's from_pretrained
    # leaves uninitialized (std 0 here: serve_rm answers inf/nan). Set as its __init__ means them to be.
    model.mean.fill_(model.config.mean)
    model.std.fill_(model.config.std)
    with torch.no_grad():
        expected = [
            float(model(ids, attention_mask=torch.ones_like(ids))[0])
            for ids in (tokenizer(text_for(tokenizer, m, r), return_tensors="pt").input_ids for m, r in conversations)
        ]
    body = scored(served, "openrlhf", conversations, normalize=True)
    assert np.abs(np.array(body["normalized_scores"]) - expected).max() <= TOLERANCE


def test_pad_equal_to_eos_is_read_as_transformers_reads_it_under_either_padding(cases) -> None:
    """Llama here has pad == eos (as SmolLM2 and many RMs do): transformers reads the last token that is not the pad
    id, so a text ending in eos is read one token earlier. Left and right padding must both keep that."""
    from arbiter.bundle import load_bundle
    from arbiter.bundle.onnx_model import OnnxRewardModel

    bundle = load_bundle(cases["llama"].bundle)
    model, tokenizer = original(bundle.path.parent / "llama")
    eos = model.config.pad_token_id
    assert eos == tokenizer.eos_token_id
    texts = ["a short one", "a somewhat longer text that pads the others", "ends in eos" + tokenizer.eos_token]
    sequences = [tokenizer(t).input_ids for t in texts] + [[*tokenizer("two eos").input_ids, eos, eos]]
    with torch.no_grad():
        expected = [float(model(input_ids=torch.tensor([s])).logits[0, 0]) for s in sequences]
    for side in ("left", "right"):
        spec = bundle.manifest.model.model_copy(update={"padding_side": side})
        onnx = OnnxRewardModel(bundle.file("model.onnx"), spec, bundle.input_builder())
        assert np.abs(onnx.run(sequences) - expected).max() <= TOLERANCE, side


def test_the_bundles_record_where_they_came_from(cases) -> None:
    trl = json.loads((cases["trl"].bundle / "manifest.json").read_text())
    assert trl["format_version"] == FORMAT_VERSION and trl["runtime"] == "onnx"
    assert trl["graph"]["fusions"]["attention"] > 0  # a BERT-style classifier fuses as native exports do
    assert trl["eval_accuracy"] is not None and trl["normalization"]["count"] > 0 and trl["int8"] is not None
    lora = json.loads((cases["lora"].bundle / "manifest.json").read_text())
    assert lora["source"]["adapter"] and lora["model"]["pooling"] == "last_non_pad"
    smol = json.loads((cases["smollm2"].bundle / "manifest.json").read_text())
    assert smol["runtime"] == "torch" and "model.onnx" not in smol["files"]
    assert smol["model"]["rendering"]["kind"] == "chat_template"
    assert "imported from" in (cases["trl"].bundle / "README.md").read_text()


def test_what_is_not_a_reward_model_is_refused_and_parity_is_enforced(cases, tmp_path: Path) -> None:
    from arbiter import weights

    causal = run_import(Path(weights.resolve("smollm2")), tmp_path / "x")
    assert causal.returncode == 2 and "not a reward model" in causal.stderr and "arbiter train" in causal.stderr
    strict = run_import(cases["bert"].bundle.parent / "bert", tmp_path / "strict", "--tolerance", "0")
    assert strict.returncode != 0 and "differ from the original model's" in strict.stderr
    assert not (tmp_path / "strict").exists() and not (tmp_path / "strict.partial").exists()
    unknown = run_import(cases["multi"].bundle.parent / "multi", tmp_path / "y", "--objective", "nope")
    assert unknown.returncode == 2 and "helpfulness, harmlessness, honesty" in unknown.stderr
