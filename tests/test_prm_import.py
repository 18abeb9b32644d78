"""Process reward models trained elsewhere, imported in the layouts vLLM serves and checked against the original's own
forward: Math-Shepherd's (a causal LM read at a step tag, good and bad tokens), a two-class token classifier
(transformers' *ForTokenClassification), and Qwen2.5-Math-PRM's own checkpoint layout; then served, over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

from arbiter import weights
from arbiter.bundle import load_bundle
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.steps import step_text
from tests.reward_checkpoints import DECODER, run_import, text_for
from tests.server import running_server

TAG, EXTRA = "ки", "<extra_0>"
SOLUTIONS = [
    ([{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"}], ["3 + 4 = 7.", "The answer is 7."]),
    ([{"role": "user", "content": "What is 12 times 11?"}], ["12 * 11 = 122.", "So 122.", "The answer is 122."]),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "5 pens at $2?"}], ["$10."]),
]


def _tokenizer(token: str, special: bool):
    tokenizer = AutoTokenizer.from_pretrained(weights.resolve(weights.SMOLLM2))
    if special:  # Qwen2.5-Math-PRM's <extra_0> is a special token of its tokenizer
        tokenizer.add_special_tokens({"additional_special_tokens": [token]})
    else:  # Math-Shepherd's ки is a piece of Mistral's vocabulary; SmolLM2's splits it, so it is added as a word
        tokenizer.add_tokens([token])
    return tokenizer


@torch.no_grad()
def _spread(model: nn.Module) -> None:
    """Random weights near zero read every step alike; widen them so that steps differ, as trained ones do."""
    for parameter in model.parameters():
        if parameter.dim() == 2:
            parameter.normal_(std=parameter.shape[1] ** -0.5)


class QwenProcessRewardLayout(Qwen2PreTrainedModel):
    """Qwen2.5-Math-PRM's checkpoint layout (`model.` a Qwen2 backbone, `score.` Linear-ReLU-Linear to two classes):
    a stand-in for Qwen's remote code, which cannot be fetched here, written from its published architecture."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        size = config.hidden_size
        self.score = nn.Sequential(nn.Linear(size, size), nn.ReLU(), nn.Linear(size, 2))
        self.post_init()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """P(step right) at every token, as Qwen's model card computes it: softmax over the two classes."""
        return self.score(self.model(input_ids=input_ids).last_hidden_state).softmax(-1)[..., 1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object, object, str]]:
    """Each layout saved by transformers' save_pretrained: (folder, model, tokenizer, step token)."""
    root = tmp_path_factory.mktemp("prm-checkpoints")
    made: dict[str, tuple[Path, object, object, str]] = {}
    torch.manual_seed(0)
    tokenizer = _tokenizer(TAG, special=False)
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), **DECODER, pad_token_id=2)
    shepherd = AutoModelForCausalLM.from_config(config).eval()
    _spread(shepherd)
    shepherd.save_pretrained(root / "shepherd"), tokenizer.save_pretrained(root / "shepherd")
    made["math-shepherd"] = (root / "shepherd", shepherd, tokenizer, TAG)

    tokenizer = _tokenizer(EXTRA, special=True)
    config = AutoConfig.for_model("qwen2", vocab_size=len(tokenizer), **DECODER, num_labels=2, pad_token_id=2)
    classifier = AutoModelForTokenClassification.from_config(config).eval()
    _spread(classifier)
    classifier.save_pretrained(root / "classifier"), tokenizer.save_pretrained(root / "classifier")
    made["two-class"] = (root / "classifier", classifier, tokenizer, EXTRA)

    config = AutoConfig.for_model("qwen2", vocab_size=len(tokenizer), **DECODER, pad_token_id=2)
    qwen = QwenProcessRewardLayout(config).eval()
    _spread(qwen)
    qwen.save_pretrained(root / "qwen"), tokenizer.save_pretrained(root / "qwen")
    saved = json.loads((root / "qwen" / "config.json").read_text())
    (root / "qwen" / "config.json").write_text(json.dumps({**saved, "architectures": ["Qwen2ForProcessRewardModel"]}))
    made["qwen"] = (root / "qwen", qwen, tokenizer, EXTRA)
    return made


@torch.no_grad()
def original_steps(layout: str, model, tokenizer, token: str, messages, steps: list[str]) -> np.ndarray:
    """P(step right) at each step token, by the original's own forward on the text as its own tokenizer encodes it."""
    ids = tokenizer(text_for(tokenizer, messages, step_text(steps, token)), return_tensors="pt").input_ids
    at = (ids[0] == tokenizer.convert_tokens_to_ids(token)).nonzero().flatten()
    if layout == "math-shepherd":  # Math-Shepherd's own reading: softmax over the logits of "+" and "-"
        good, bad = tokenizer.convert_tokens_to_ids("+"), tokenizer.convert_tokens_to_ids("-")
        return model(input_ids=ids).logits[0][at][:, [good, bad]].softmax(-1)[:, 0].double().numpy()
    if layout == "two-class":
        return model(input_ids=ids).logits[0][at].softmax(-1)[:, 1].double().numpy()
    return model(ids)[0][at].double().numpy()


@pytest.fixture(scope="module")
def imported(checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("prm-imports")
    bundles = {}
    for layout, (folder, _, _, token) in checkpoints.items():
        done = run_import(folder, out / layout, "--step-token", token, "--max-length", "256")
        assert done.returncode == 0, done.stderr[-3000:]
        bundles[layout] = out / layout
    return bundles


@pytest.mark.parametrize("layout", ["math-shepherd", "two-class", "qwen"])
def test_an_imported_prm_reads_every_step_as_its_original(layout: str, checkpoints, imported) -> None:
    _, model, tokenizer, token = checkpoints[layout]
    bundle = load_bundle(imported[layout])
    m = bundle.manifest
    assert m.model.steps is not None and m.model.steps.token == token and m.parity is not None
    assert m.parity.max_abs_diff <= 1e-4 and m.parity.items >= 8 and m.source is not None
    onnx = OnnxRewardModel.from_bundle(bundle)
    seen = []
    for messages, steps in SOLUTIONS:
        ids = onnx.builder.encode(messages, step_text(steps, token)).ids
        got = 1 / (1 + np.exp(-onnx.step_logits([ids])[0]))
        expected = original_steps(layout, model, tokenizer, token, messages, steps)
        assert len(got) == len(steps) and np.allclose(got, expected, atol=1e-5), (got, expected)
        seen.append(expected)
    assert np.ptp(np.concatenate(seen)) > 1e-3  # steps read differently: a check that could fail


def test_the_qwen_stand_in_is_qwens_forward(checkpoints) -> None:
    """The Qwen layout's reference is the stand-in above: it must agree with the two-class head written out."""
    _, qwen, tokenizer, _ = checkpoints["qwen"]
    ids = tokenizer("1 + 1 = 2.<extra_0>", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = qwen.model(input_ids=ids).last_hidden_state
        logits = qwen.score[2](torch.relu(qwen.score[0](hidden)))
        assert torch.allclose(qwen(ids), torch.softmax(logits, -1)[..., 1])


def test_imported_prms_are_served_step_by_step(checkpoints, imported, tmp_path: Path) -> None:
    flags = [f for layout, path in imported.items() for f in ("--bundles", f"{layout}={path}")]
    with running_server(tmp_path, *flags, "--judge-backend", "off") as server:
        for layout, (_, model, tokenizer, token) in checkpoints.items():
            messages, steps = SOLUTIONS[1]
            answer = httpx.post(server.url + "/v1/score", json={"model": layout, "items": [
                {"prompt": messages, "steps": steps}]}).json()  # fmt: skip
            expected = original_steps(layout, model, tokenizer, token, messages, steps)
            assert np.allclose(answer["steps"][0]["probabilities"], expected, atol=1e-5), layout


def test_what_is_not_a_prm_layout_is_refused(checkpoints, tmp_path: Path) -> None:
    folder, _, _, _ = checkpoints["math-shepherd"]
    merged = run_import(folder, tmp_path / "a", "--step-token", "step tag")  # several tokens of this tokenizer
    assert merged.returncode != 0 and "must be one" in merged.stderr and "Traceback" not in merged.stderr
    bad = run_import(folder, tmp_path / "b", "--step-token", TAG, "--good-token", "good answer")
    assert bad.returncode != 0 and "--good-token" in bad.stderr and not (tmp_path / "b").exists()
