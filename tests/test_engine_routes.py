"""The engines' protocols on Arbiter: veRL's own reward-loop code pointed at the server (its vLLM path posts
/classify, its SGLang path /v1/embeddings), and vLLM- and TEI-style requests built as their docs show them, with
the answers checked field by field against transformers' own forward of the imported checkpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from tests.reward_checkpoints import TOLERANCE, original, text_for


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def verl_reward(server_url: str, engine: str, model_path: Path, messages: list, response: str) -> float:
    """veRL's RewardLoopWorker.compute_score_disrm, run as veRL runs it: the rollout decoded, the reward model's chat
    template applied by veRL, posted by veRL's own retrying client, the answer read by veRL."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.protocol import DataProto

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    worker = RewardLoopWorker.__new__(RewardLoopWorker)  # its __init__ builds Ray-side reward managers: not needed
    worker.config = OmegaConf.create(
        {"reward": {"reward_model": {"model_path": str(model_path), "rollout": {"name": engine}}}}
    )
    worker.reward_router_address = server_url.removeprefix("http://")
    worker.input_tokenizer = worker.reward_model_tokenizer = tokenizer
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    if not isinstance(prompt_ids, torch.Tensor):
        prompt_ids = prompt_ids["input_ids"]
    response_ids = tokenizer(response + tokenizer.eos_token, return_tensors="pt").input_ids
    padded = torch.cat([response_ids, torch.full((1, 3), tokenizer.pad_token_id)], dim=1)  # rollouts come padded
    mask = torch.cat(
        [torch.ones_like(prompt_ids), torch.ones_like(response_ids), torch.zeros(1, 3, dtype=torch.long)], 1
    )
    data = DataProto.from_dict(
        tensors={"responses": padded, "attention_mask": mask},
        non_tensors={"raw_prompt": np.array([messages], dtype=object)},
    )
    return float(asyncio.run(worker.compute_score_disrm(data))["reward_score"])


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_verl_reward_loop_scores_through_arbiter(engine, cases, served, conversations) -> None:
    """Named by its checkpoint path, as veRL names it (reward_model.model_path): the imported bundle answers."""
    checkpoint = cases["llama"].bundle.parent / "llama"
    model, tokenizer = original(checkpoint)
    for messages, response in conversations[:4]:
        got = verl_reward(served.url, engine, checkpoint, messages, response)
        text = text_for(tokenizer, messages, response)
        # veRL strips a leading bos_token before posting; SmolLM2's bos is <|im_start|>, which its template opens with.
        text = text.removeprefix(tokenizer.bos_token or "")
        with torch.no_grad():
            expected = float(model(input_ids=tokenizer(text, return_tensors="pt").input_ids).logits[0, 0])
        assert abs(got - expected) <= TOLERANCE, (engine, got, expected)


def post(served, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{served.url}{path}", json=body, timeout=60)


def test_vllm_classify_answers_field_by_field(cases, served, conversations) -> None:
    checkpoint = cases["multi"].bundle.parent / "multi"
    model, tokenizer = original(checkpoint)
    texts = [text_for(tokenizer, m, r) for m, r in conversations[:3]]
    with torch.no_grad():
        logits = np.stack(
            [model(input_ids=tokenizer(t, return_tensors="pt").input_ids).logits[0].numpy() for t in texts]
        )
    # As vLLM's docs show it: {"model", "input": [texts]}; activation on by default (softmax over three labels).
    answer = post(served, "/classify", {"model": "multi", "input": texts})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"].startswith("classify-") and body["object"] == "list" and body["model"] == "multi"
    assert isinstance(body["created"], int)
    labels = ["helpfulness", "harmlessness", "honesty"]
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for i, item in enumerate(body["data"]):
        assert (item["index"], item["num_classes"], item["label"]) == (i, 3, labels[int(np.argmax(logits[i]))])
        assert np.abs(np.array(item["probs"]) - softmax[i]).max() <= TOLERANCE
    tokens = sum(len(tokenizer(t).input_ids) for t in texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
    # Raw logits with activation off (veRL's older `activation` and the current `use_activation` both).
    for flag in ("use_activation", "activation"):
        raw = post(served, "/classify", {"model": "multi", "input": texts[0], flag: False}).json()
        assert np.abs(np.array(raw["data"][0]["probs"]) - logits[0]).max() <= TOLERANCE


def test_vllm_classify_of_one_label_and_of_token_ids(cases, served, conversations) -> None:
    checkpoint = cases["qwen3"].bundle.parent / "qwen3"
    model, tokenizer = original(checkpoint)
    text = text_for(tokenizer, *conversations[0])
    ids = tokenizer(text).input_ids
    with torch.no_grad():
        score = float(model(input_ids=torch.tensor([ids])).logits[0, 0])
    by_text = post(served, "/classify", {"model": "qwen3", "input": text}).json()["data"][0]
    assert (by_text["label"], by_text["num_classes"]) == ("LABEL_0", 1)
    assert abs(by_text["probs"][0] - float(sigmoid(np.array(score)))) <= TOLERANCE  # one label: a sigmoid
    by_ids = post(served, "/classify", {"model": "qwen3", "input": [ids], "use_activation": False}).json()
    assert abs(by_ids["data"][0]["probs"][0] - score) <= TOLERANCE
    cut = post(served, "/classify", {"model": "qwen3", "input": text, "truncate_prompt_tokens": 8}).json()
    assert cut["usage"]["prompt_tokens"] == 8  # the last 8 tokens are kept, as vLLM keeps them


def test_vllm_pooling_gives_the_head_outputs(cases, served, conversations) -> None:
    items = conversations[:2]
    own = httpx.post(
        f"{served.url}/v1/score", json={"model": "trl", "items": [{"prompt": m, "response": r} for m, r in items]}
    ).json()
    tokenizer = AutoTokenizer.from_pretrained(cases["trl"].bundle)
    texts = [text_for(tokenizer, m, r) for m, r in items]
    body = post(served, "/pooling", {"model": "trl", "input": texts, "use_activation": False}).json()
    assert body["id"].startswith("pool-") and [d["object"] for d in body["data"]] == ["pooling", "pooling"]
    assert np.abs(np.array([d["data"][0] for d in body["data"]]) - own["scores"]).max() <= TOLERANCE


def test_tei_predict_single_batch_raw_and_refusals(cases, served, conversations) -> None:
    """TEI's /predict on the default model (bert, the first bundle served), as TEI's docs show the requests."""
    model, tokenizer = original(cases["bert"].bundle.parent / "bert")
    texts = [text_for(tokenizer, m, r) for m, r in conversations[:2]]
    with torch.no_grad():
        scores = [float(model(input_ids=tokenizer(t, return_tensors="pt").input_ids).logits[0, 0]) for t in texts]
    single = post(served, "/predict", {"inputs": texts[0]}).json()
    assert (
        single[0]["label"] == "LABEL_0" and abs(single[0]["score"] - float(sigmoid(np.array(scores[0])))) <= TOLERANCE
    )
    batch = post(served, "/predict", {"inputs": [[t] for t in texts], "raw_scores": True}).json()
    assert [len(b) for b in batch] == [1, 1]
    assert np.abs(np.array([b[0]["score"] for b in batch]) - scores).max() <= TOLERANCE
    pair = post(served, "/predict", {"inputs": texts})
    assert pair.status_code == 400 and "sentence pair" in pair.json()["error"]["message"]
    long = post(served, "/predict", {"inputs": "word " * 2000, "truncate": False})
    assert long.status_code == 413 and long.json()["error"]["request_id"]
    assert post(served, "/predict", {"inputs": "word " * 2000}).status_code == 200  # unset: cut, as every route cuts


def test_engine_routes_share_the_limits_and_errors(served) -> None:
    unknown = post(served, "/classify", {"model": "nope", "input": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    bad_id = post(served, "/classify", {"model": "qwen3", "input": [[10**8]]})
    assert bad_id.status_code == 400 and "vocabulary" in bad_id.json()["error"]["message"]
    assert post(served, "/classify", {"model": "qwen3", "input": []}).status_code == 422
    empty = post(served, "/classify", {"model": "qwen3", "input": [[]]})
    assert empty.status_code == 400 and "no tokens" in empty.json()["error"]["message"]
    assert post(served, "/classify", {"model": "qwen3", "input": ""}).status_code == 422
    many = post(served, "/classify", {"model": "qwen3", "input": ["x"] * 65})
    assert many.status_code == 413 and many.json()["error"]["details"]["limit"] == "max_items"
    assert httpx.get(f"{served.url}/readyz").status_code == 200  # and the server goes on serving
