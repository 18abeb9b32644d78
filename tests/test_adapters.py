"""The trainer adapters, each driven by that trainer's own code against a real server: TRL's GRPOTrainer,
OpenRLHF's reward_func loader and executor, veRL's reward managers."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arbiter.clients.adapters.trl import ArbiterReward, AsyncArbiterReward, trl_items

CHAT = [{"role": "user", "content": "Say something kind."}]
GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "verifiable" / "gsm8k_model_solutions.jsonl"


def test_trl_forms_standard_and_conversational(server, reference):
    standard = ArbiterReward(server.url)
    assert np.allclose(
        standard(prompts=["2+2?", "Hi"], completions=["4", "Hello!"]), reference(["2+2?", "Hi"], ["4", "Hello!"])
    )
    completions = [[{"role": "assistant", "content": "You matter."}], [{"role": "assistant", "content": "No."}]]
    conversational = AsyncArbiterReward(server.grpc_url, name="arbiter_grpc")
    rewards = asyncio.run(conversational(prompts=[CHAT, CHAT], completions=completions, completion_ids=[[1], [2]]))
    assert np.allclose(rewards, reference([CHAT, CHAT], ["You matter.", "No."]), atol=1e-5)
    assert conversational.__name__ == "arbiter_grpc"
    assert pickle.loads(pickle.dumps(standard)).url == server.url  # the reward function pickles, client and all
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        trl_items(["a", "b"], ["c"])


def tiny_policy():
    """A tiny random Llama with SmolLM2's tokenizer: real GRPO steps on CPU in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from arbiter.weights import SMOLLM2, resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(SMOLLM2))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return tokenizer, LlamaForCausalLM(config)


def grpo_config(tmp_path, **overrides):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        **overrides,
    )


@pytest.mark.slow
def test_trl_grpo_trainer_trains_on_arbiter_rewards(server, reference, tmp_path):
    """Real GRPOTrainer steps on CPU: a tiny Llama with SmolLM2's tokenizer, rewards from the server over HTTP
    (sync reward function) and gRPC (async), each reward checked against the bundle scored in process."""
    from datasets import Dataset
    from trl import GRPOTrainer

    tokenizer, model = tiny_policy()
    seen: list[tuple[list, list, list[float]]] = []

    class Recorded(ArbiterReward):
        def __call__(self, prompts, completions, **kwargs):
            rewards = super().__call__(prompts, completions, **kwargs)
            seen.append((prompts, completions, rewards))
            return rewards

    prompts = [[{"role": "user", "content": f"Tell me something about the number {i}."}] for i in range(8)]
    args = grpo_config(tmp_path)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[
            Recorded(server.url, name="arbiter_http"),
            AsyncArbiterReward(server.grpc_url, name="arbiter_grpc"),
        ],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    logged = [entry for entry in trainer.state.log_history if "rewards/arbiter_http/mean" in entry]
    assert len(logged) == 2 and all("rewards/arbiter_grpc/mean" in entry for entry in logged)
    assert seen
    for batch_prompts, completions, rewards in seen:
        responses = [c[0]["content"] for c in completions]
        assert np.allclose(rewards, reference(batch_prompts, responses), atol=1e-5)
    assert np.isclose(logged[-1]["rewards/arbiter_http/mean"], np.mean(seen[-1][2]), atol=1e-4)


def test_openrlhf_reward_func_file_with_openrlhf_executor(server, reference, monkeypatch):
    """OpenRLHF loads the file from --reward.remote_url and calls reward_func in threads, as in a rollout."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    path = subprocess.run(
        [sys.executable, "-m", "arbiter.clients.adapters", "openrlhf"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for url in (server.url, server.grpc_url):
        monkeypatch.setenv("ARBITER_REWARD_URL", url)
        executor = SingleTurnAgentExecutor(remote_rm_url=path)
        assert executor.reward_func is not None
        prompts = ["Human: What is the capital of France?\n\nAssistant:", "Human: Tell me a joke.\n\nAssistant:"]
        responses = [" Paris.", " Why did the chicken cross the road?"]
        queries = [p + r for p, r in zip(prompts, responses, strict=True)]
        results = asyncio.run(executor._fetch_rewards_via_func(queries, prompts, [None, None]))
        rewards = [r["rewards"][0] for r in results]  # the executor calls one query at a time
        assert np.allclose(rewards, reference(prompts, responses), atol=1e-5)
        assert all(r["scores"] == r["rewards"] and len(r["extra_logs"]["normalized_reward"]) == 1 for r in results)


@pytest.fixture
def verl_batch(trained_run):
    """A veRL DataProto as the rollout leaves it: left-padded prompts, right-padded responses, and the
    non-tensor columns veRL's datasets carry (data_source, reward_model.ground_truth, extra_info)."""
    import torch
    from transformers import AutoTokenizer
    from verl import DataProto

    tokenizer = AutoTokenizer.from_pretrained(trained_run / "checkpoint" / "backbone")
    prompts = ["what is the capital of france?", "tell me a joke."]
    responses = ["paris is the capital.", "why did the chicken cross the road?"]
    width_p, width_r = 12, 12
    prompt_ids = torch.full((2, width_p), tokenizer.pad_token_id)
    response_ids = torch.full((2, width_r), tokenizer.pad_token_id)
    mask = torch.zeros((2, width_p + width_r), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(r, add_special_tokens=False)["input_ids"]
        prompt_ids[i, width_p - len(p_ids) :] = torch.tensor(p_ids)
        response_ids[i, : len(r_ids)] = torch.tensor(r_ids)
        mask[i, width_p - len(p_ids) : width_p + len(r_ids)] = 1
    data = DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["hh", "hh"], dtype=object),
            "reward_model": np.array([{"ground_truth": None}] * 2, dtype=object),
            "extra_info": np.array([{"prompt": p} for p in prompts], dtype=object),
        },
    )
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    return tokenizer, data, prompts, responses, lengths


@pytest.mark.parametrize(("manager", "name"), [("naive", "compute_score"), ("batch", "compute_score_batch")])
def test_verl_reward_managers_call_the_adapter(server, reference, verl_batch, manager, name):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager.batch import BatchRewardManager
    from verl.workers.reward_manager.naive import NaiveRewardManager

    from arbiter.clients.adapters import verl as adapter

    tokenizer, data, prompts, responses, lengths = verl_batch
    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {"path": adapter.__file__, "name": name, "reward_kwargs": {"url": server.url}}
            }
        }
    )
    compute_score = get_custom_reward_fn(config)
    cls = NaiveRewardManager if manager == "naive" else BatchRewardManager
    rewards = cls(tokenizer=tokenizer, num_examine=0, compute_score=compute_score)(data)
    # veRL decodes the response ids itself (lower-cased by this tokenizer) and puts the reward on the last token.
    decoded = [tokenizer.decode(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    expected = reference(prompts, decoded)
    for i, length in enumerate(lengths):
        assert np.isclose(rewards[i, length - 1].item(), expected[i], atol=1e-5)
        assert rewards[i].count_nonzero() == 1


# -- verifiable rewards: the references each trainer sends, and its way of masking -------------------------------

RUNAWAY = r"So the answer is $\boxed{9^{9^{9^{9}}}}$"  # SymPy runs for minutes: the math verifier times out
MATH_ITEMS = [  # (prompt, response, label): right, wrong, no answer
    ("Janet's ducks lay 16 eggs; she eats 3 and bakes 4. She sells the rest at $2. Dollars a day?", "A: 18", "18"),
    ("A robe takes 2 bolts of blue fiber and half that of white. How many bolts in total?", "A: 4", "3"),
    ("Josh flips a house. What was his profit?", "I cannot tell.", "70000"),
]


def test_trl_passes_dataset_columns_as_labels_and_masks_with_none(server):
    prompts, responses, labels = (list(x) for x in zip(*MATH_ITEMS, strict=True))
    reward = ArbiterReward(server.url, spec="math")
    assert reward(prompts=prompts, completions=responses, answer=labels) == [1.0, 0.0, 0.0]  # TRL's **columns
    named = ArbiterReward(server.grpc_url, spec="math", label_column="solution_value")
    assert named(prompts=prompts, completions=responses, solution_value=labels, answer=["0"] * 3) == [1.0, 0.0, 0.0]
    masked = asyncio.run(
        AsyncArbiterReward(server.url, spec="math")(prompts=["q"], completions=[RUNAWAY], ground_truth=["1"])
    )
    assert masked == [None]  # a timeout says nothing about the completion: TRL leaves None out (nansum)
    with pytest.raises(ValueError, match="label_column 'nope'"):
        ArbiterReward(server.url, spec="math", label_column="nope")(prompts=["q"], completions=["A: 1"])


def test_openrlhf_labels_reach_the_spec_over_its_http_and_file_forms(server, monkeypatch):
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    prompts = [p for p, _, _ in MATH_ITEMS] + ["q"]
    queries = [p + r for p, (_, r, _) in zip(prompts, MATH_ITEMS, strict=False)] + ["q" + RUNAWAY]
    labels = [label for _, _, label in MATH_ITEMS] + ["1"]
    over_http = SingleTurnAgentExecutor(remote_rm_url=f"{server.url}/get_reward?spec=math")
    answers = asyncio.run(over_http._fetch_rewards_via_http(queries, prompts, labels))
    assert answers[0]["rewards"] == [1.0, 0.0, 0.0, 0.0]
    assert answers[0]["extra_logs"]["arbiter_masked"] == [0.0, 0.0, 0.0, 1.0]
    path = subprocess.run(
        [sys.executable, "-m", "arbiter.clients.adapters", "openrlhf"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setenv("ARBITER_REWARD_URL", server.grpc_url)
    monkeypatch.setenv("ARBITER_REWARD_SPEC", "math")
    executor = SingleTurnAgentExecutor(remote_rm_url=path)
    results = asyncio.run(executor._fetch_rewards_via_func(queries, prompts, labels))
    assert [r["rewards"][0] for r in results] == [1.0, 0.0, 0.0, 0.0]
    assert [r["extra_logs"]["arbiter_masked"][0] for r in results] == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(("manager", "name"), [("naive", "compute_score"), ("batch", "compute_score_batch")])
def test_verl_ground_truth_and_data_source_reach_the_spec(server, manager, name):
    """veRL's managers with its own DataProto: ground_truth is the label; the mask comes back in extra info."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager.batch import BatchRewardManager
    from verl.workers.reward_manager.naive import NaiveRewardManager

    from arbiter.clients.adapters import verl as adapter
    from arbiter.weights import SMOLLM2, resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(SMOLLM2))  # decodes digits and LaTeX as written
    responses = ["A: 18", "A: 4", RUNAWAY]
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(map(len, ids))
    response_ids = torch.full((3, width), tokenizer.pad_token_id)
    mask = torch.zeros((3, 1 + width), dtype=torch.long)
    for i, row in enumerate(ids):
        response_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : 1 + len(row)] = 1
    data = DataProto.from_dict(
        tensors={
            "prompts": torch.full((3, 1), tokenizer.pad_token_id),
            "responses": response_ids,
            "attention_mask": mask,
        },
        non_tensors={
            "data_source": np.array(["openai/gsm8k"] * 3, dtype=object),
            "reward_model": np.array([{"ground_truth": g} for g in ("18", "3", "1")], dtype=object),
            "extra_info": np.array([{"prompt": "q"}] * 3, dtype=object),
        },
    )
    kwargs = {"url": server.url, "spec": "math"}
    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": adapter.__file__, "name": name, "reward_kwargs": kwargs}}}
    )
    cls = NaiveRewardManager if manager == "naive" else BatchRewardManager
    out = cls(tokenizer=tokenizer, num_examine=0, compute_score=get_custom_reward_fn(config))(data, return_dict=True)
    rewards = out["reward_tensor"]
    assert [rewards[i, len(row) - 1].item() for i, row in enumerate(ids)] == [1.0, 0.0, 0.0]
    assert list(out["reward_extra_info"]["arbiter_masked"]) == [0.0, 0.0, 1.0]
    assert list(out["reward_extra_info"]["arbiter_failure"]) == ["", "", "correct: timeout"]


RLVR_SPEC = """name: rlvr
version: "1"
components:
  - {name: correct, kind: verifier, verifier: math}
  - {name: formatted, kind: verifier, verifier: format, options: {format: think_answer}}
reward:
  - {component: correct, weight: 1.0}
  - {component: formatted, weight: 0.1}
"""


@pytest.mark.slow
def test_trl_grpo_trainer_on_gsm8k_with_verifiable_rewards(bundle_dir, tmp_path):
    """RLVR end to end: GRPOTrainer, 2 steps, GSM8K questions with their answers as the dataset's `answer` column,
    rewarded through the adapter by math + format over gRPC; each reward is what the verifiers give directly."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from arbiter.verifiers import format as fmt
    from arbiter.verifiers import math
    from tests.server import running_server

    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:8]]
    (tmp_path / "rlvr.yaml").write_text(RLVR_SPEC)
    flags = ["--bundles", f"rm={bundle_dir}", "--reward-specs", str(tmp_path / "rlvr.yaml"), "--judge-backend", "off"]
    seen: list[tuple[list, list[str], list, list]] = []

    class Recorded(ArbiterReward):
        def __call__(self, prompts, completions, **columns):
            rewards = super().__call__(prompts, completions, **columns)
            seen.append((prompts, [c[0]["content"] for c in completions], columns["answer"], rewards))
            return rewards

    with running_server(tmp_path, *flags, "--reward-state-path", "") as server:
        tokenizer, model = tiny_policy()
        dataset = Dataset.from_list(
            [{"prompt": [{"role": "user", "content": r["question"]}], "answer": r["answer"]} for r in rows]
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[Recorded(server.grpc_url, spec="rlvr", name="rlvr")],
            args=grpo_config(tmp_path),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 2
    for _, completions, answers, rewards in seen:
        for completion, answer, reward in zip(completions, answers, rewards, strict=True):
            correct = math.check(completion, answer, math.MathRules())
            formatted = fmt.check(completion, None, fmt.FormatRules(format="think_answer"))
            expected = (correct.score if not correct.failed else 0.0) + 0.1 * formatted.score
            assert reward is None if correct.status in ("timeout", "error") else reward == pytest.approx(expected)
