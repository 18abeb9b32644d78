"""Process reward models served: the PRM bundle (its graph read at the step tokens, parity, step evaluation), then one
real server holding it beside an outcome model: /v1/score and gRPC Score with steps (each step's P(right) and the
four aggregates against the bundle scored in process), one forward pass per solution, compare and rank by the
default aggregate, reward-spec components over any aggregate, vLLM's /pooling step route, and every refusal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from arbiter.bundle import FORMAT_VERSION, load_bundle
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.steps import STEP_AGGREGATES, aggregate, step_text
from arbiter.clients import RewardClient
from arbiter.clients import protocol as wire
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from arbiter.rewards.spec import SpecError, check_spec, parse_spec
from tests.server import running_server

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "verifiable" / "gsm8k_model_solutions.jsonl"
QUESTION = "Tom has 3 apples and buys 4 more. He gives 2 away. How many apples does he have?"
RIGHT = ["He has 3 + 4 = 7 apples.", "He keeps 7 - 2 = 5.", "A: 5"]
WRONG = ["He has 3 + 4 = 8 apples.", "He keeps 8 - 2 = 6.", "A: 6"]
SPEC = """name: steps
version: "1"
components:
  - {name: weakest, kind: model, model: prm}
  - {name: all_right, kind: model, model: prm, step_aggregate: product, step_separator: "\\n"}
reward:
  - {component: weakest, weight: 1.0}
  - {component: all_right, weight: 0.5}
"""


@pytest.fixture(scope="module")
def prm(prm_bundle: Path) -> OnnxRewardModel:
    return OnnxRewardModel.from_bundle(load_bundle(prm_bundle))


@pytest.fixture(scope="module")
def prm_server(bundle_dir: Path, prm_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("prm-logs")
    (logs / "steps.yaml").write_text(SPEC)
    flags = ("--bundles", f"rm={bundle_dir}", "--bundles", f"prm={prm_bundle}", "--reward-specs",
             str(logs / "steps.yaml"), "--judge-backend", "off")  # fmt: skip
    with running_server(logs, *flags) as s:
        yield s


def expected(prm: OnnxRewardModel, prompt: str, steps: list[str]) -> np.ndarray:
    """P(right) of each step, from the bundle in process: what the server must answer."""
    assert prm.spec.steps is not None
    ids = prm.builder.encode(prompt, step_text(steps, prm.spec.steps.token)).ids
    return 1 / (1 + np.exp(-prm.step_logits([ids])[0]))


def logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def test_the_prm_bundle_reads_steps_as_training_did(prm_bundle: Path, prm_run: Path):
    bundle = load_bundle(prm_bundle)
    m = bundle.manifest
    assert m.format_version == FORMAT_VERSION and m.model.steps is not None and m.model.steps.token == "<step>"
    assert m.parity is not None and m.parity.max_abs_diff <= m.parity.tolerance and m.parity.items >= 32
    assert m.int8 is None and not bundle.has("model.int8.onnx")
    # the ONNX file's own step evaluation is the training run's (same held-out solutions, same model)
    exported = json.loads((prm_bundle / "step_eval.json").read_text())
    trained = json.loads((prm_run / "step_eval.json").read_text())
    assert exported["steps"] == trained["steps"] == m.step_evaluation.steps
    assert exported["step_auc"]["auc"] == pytest.approx(trained["step_auc"]["auc"], abs=2e-3)
    assert m.step_evaluation.step_auc_low > 0.58
    card = (prm_bundle / "README.md").read_text()
    assert "process reward model" in card and "step AUC" in card


def test_score_gives_every_step_and_every_aggregate_over_http_and_grpc(prm_server, prm):
    items = [{"prompt": QUESTION, "steps": RIGHT}, {"prompt": QUESTION, "steps": WRONG}]
    for how in STEP_AGGREGATES:
        answer = httpx.post(prm_server.url + "/v1/score",
                            json={"model": "prm", "items": items, "step_aggregate": how}).json()  # fmt: skip
        for item, steps, score in zip((RIGHT, WRONG), answer["steps"], answer["scores"], strict=True):
            p = expected(prm, QUESTION, item)
            assert np.allclose(steps["probabilities"], p, atol=1e-6) and len(p) == 3
            for name in STEP_AGGREGATES:
                assert steps[name] == pytest.approx(aggregate(p, name), abs=1e-6)
            assert score == pytest.approx(logit(aggregate(p, how)), abs=1e-5)
    with grpc.insecure_channel(prm_server.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        items = [pb.ScoreItem(prompt=pb.Prompt(text=QUESTION), steps=s) for s in (RIGHT, WRONG)]
        request = pb.ScoreRequest(model="prm", step_aggregate="last", sigmoid=True, items=items)
        over_grpc = stub.Score(request, timeout=60)
        models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=60).models}
    for steps, row, score in zip((RIGHT, WRONG), over_grpc.steps, over_grpc.scores, strict=True):
        p = expected(prm, QUESTION, steps)
        assert np.allclose(row.probabilities, p, atol=1e-6) and row.min == pytest.approx(p.min(), abs=1e-6)
        assert score == pytest.approx(p[-1], abs=1e-6)  # sigmoid of logit(last) is the last step's P(right)
    assert models["prm"].step_token == "<step>" and models["rm"].step_token == ""


def test_a_response_is_split_at_the_step_token_or_at_the_separator_asked_for(prm_server, prm):
    by_steps = expected(prm, QUESTION, RIGHT)
    forms = [
        {"items": [{"prompt": QUESTION, "response": "<step>".join(RIGHT)}]},
        {"items": [{"prompt": QUESTION, "response": "<step>".join(RIGHT) + "<step>"}]},
        {"items": [{"prompt": QUESTION, "response": "\n\n".join(RIGHT)}], "step_separator": "\n\n"},
    ]
    for form in forms:
        answer = httpx.post(prm_server.url + "/v1/score", json={"model": "prm", **form}).json()
        assert np.allclose(answer["steps"][0]["probabilities"], by_steps, atol=1e-6), form
    one = httpx.post(prm_server.url + "/v1/score", json={"model": "prm", "items": [
        {"prompt": QUESTION, "response": " ".join(RIGHT)}]}).json()  # fmt: skip
    assert len(one["steps"][0]["probabilities"]) == 1  # no separator: the response is one step


def test_the_client_takes_steps_on_both_transports(prm_server, prm):
    for url in (prm_server.url, prm_server.grpc_url):
        with RewardClient(url, model="prm") as client:
            answer = client.score(QUESTION, [RIGHT, "<step>".join(WRONG)], step_aggregate="mean")
        assert answer.steps is not None and len(answer.steps) == 2
        assert np.allclose(answer.steps[1].probabilities, expected(prm, QUESTION, WRONG), atol=1e-6)
        assert answer.scores[0] == pytest.approx(logit(expected(prm, QUESTION, RIGHT).mean()), abs=1e-5)


def _sequences_batched(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(r"^arbiter_batch_size_sum (\S+)$", text, re.M).group(1))


def test_one_forward_pass_per_solution_however_many_steps(prm_server):
    long_solution = [f"Step {i}: {i} + 1 = {i + 1}." for i in range(12)]
    items = [{"prompt": QUESTION, "steps": long_solution}, {"prompt": QUESTION, "steps": RIGHT}]
    before = _sequences_batched(prm_server.url)
    answer = httpx.post(prm_server.url + "/v1/score", json={"model": "prm", "items": items}).json()
    assert [len(s["probabilities"]) for s in answer["steps"]] == [12, 3]
    assert _sequences_batched(prm_server.url) - before == 2  # two sequences batched for fifteen steps


def test_compare_and_rank_use_the_weakest_step(prm_server, prm):
    right, wrong = "<step>".join(RIGHT), "<step>".join(WRONG)
    ranked = httpx.post(prm_server.url + "/v1/rank", json={"model": "prm", "prompt": QUESTION,
                                                           "responses": [wrong, right]}).json()  # fmt: skip
    weakest = [logit(expected(prm, QUESTION, s).min()) for s in (WRONG, RIGHT)]
    assert np.allclose(ranked["scores"], weakest, atol=1e-5)
    assert ranked["order"] == sorted(range(2), key=lambda i: -weakest[i])
    pair = {"model": "prm", "prompt": QUESTION, "response_a": right, "response_b": wrong}
    compared = httpx.post(prm_server.url + "/v1/compare", json=pair).json()
    assert compared["comparisons"][0]["prob_a"] == pytest.approx(1 / (1 + np.exp(weakest[0] - weakest[1])), abs=1e-6)


def test_a_reward_spec_reads_any_aggregate_of_one_forward_pass(prm_server, prm):
    items = [{"prompt": QUESTION, "response": "\n".join(s)} for s in (RIGHT, WRONG)]
    answer = httpx.post(prm_server.url + "/v1/reward", json={"spec": "steps", "items": items}).json()
    for row, steps in enumerate((RIGHT, WRONG)):
        whole = expected(prm, QUESTION, ["\n".join(steps)])  # no step token in the text: one step
        split = expected(prm, QUESTION, steps)
        assert answer["components"]["weakest"][row] == pytest.approx(logit(whole.min()), abs=1e-5)
        assert answer["components"]["all_right"][row] == pytest.approx(logit(float(np.prod(split))), abs=1e-5)
        assert answer["rewards"][row] == pytest.approx(
            logit(whole.min()) + 0.5 * logit(float(np.prod(split))), abs=1e-5
        )


def test_step_options_on_an_outcome_model_are_refused_when_the_spec_loads():
    spec = parse_spec({"name": "bad", "version": "1", "components": [
        {"name": "rm", "kind": "model", "model": "rm", "step_aggregate": "min"}],
        "reward": [{"component": "rm", "weight": 1.0}]}, "bad.yaml")  # fmt: skip
    with pytest.raises(SpecError, match="process reward models"):
        check_spec(spec, {"rm", "prm"}, False, {"rm": None}, process_models={"prm"})
    check_spec(spec.model_copy(update={"components": [spec.components[0].model_copy(update={"model": "prm"})]}),
               {"rm", "prm"}, False, {}, process_models={"prm"})  # fmt: skip


def test_the_pooling_route_answers_step_pooling(prm_server, prm):
    text = QUESTION + " " + step_text(RIGHT, "<step>")
    pooled = httpx.post(prm_server.url + "/pooling", json={"model": "prm", "input": [text],
                                                           "task": "token_classify"}).json()  # fmt: skip
    assert prm.spec.steps is not None
    p = 1 / (1 + np.exp(-prm.step_logits([prm.builder.encode_text(text, True, None).ids])[0]))
    assert np.allclose(pooled["data"][0]["data"], np.column_stack([1 - p, p]), atol=1e-6) and len(p) == 3
    raw = httpx.post(prm_server.url + "/pooling", json={"model": "prm", "input": text, "use_activation": False}).json()
    assert np.allclose([z for _, z in raw["data"][0]["data"]], np.log(p / (1 - p)), atol=1e-5)
    refused = httpx.post(prm_server.url + "/pooling", json={"model": "rm", "input": "a", "task": "token_classify"})
    assert refused.status_code == 400 and "not a process reward model" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "rm", "items": [{"prompt": "q", "steps": ["a", "b"]}]}, "not a process reward model"),
        ({"model": "rm", "items": [{"prompt": "q", "response": "a"}], "step_separator": "\n"}, "not a process reward"),
        ({"model": "prm", "items": [{"prompt": "q<step>", "steps": ["a"]}]}, "cannot be told apart"),
        ({"model": "prm", "items": [{"prompt": "q", "steps": ["a<step>b"]}]}, "cannot be told apart"),
        ({"model": "prm", "items": [{"prompt": "q", "steps": [" ".join(["seven"] * 400)]}]}, "no step to score"),
        ({"model": "judge", "items": [{"prompt": "q", "steps": ["a"]}]}, "the judge scores whole responses"),
        ({"model": "prm", "items": [{"prompt": "q", "response": "a", "steps": ["a"]}]}, "either response or steps"),
        ({"model": "prm", "items": [{"prompt": "q"}]}, "either response or steps"),
        ({"model": "prm", "items": [{"prompt": "q", "steps": []}]}, "steps"),
        ({"model": "prm", "items": [{"prompt": "q", "steps": ["a"]}], "step_aggregate": "max"}, "step_aggregate"),
    ],
)
def test_bad_step_requests_are_4xx_with_the_request_id_and_the_server_keeps_serving(prm_server, body, says):
    answer = httpx.post(prm_server.url + "/v1/score", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json()["error"]
    assert says in json.dumps(error) and error["request_id"], error
    assert httpx.post(prm_server.url + "/v1/score", json={"model": "prm", "items": [
        {"prompt": QUESTION, "steps": RIGHT}]}).status_code == 200  # fmt: skip


def test_bad_step_requests_over_grpc_are_invalid_argument(prm_server):
    with grpc.insecure_channel(prm_server.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        for request in (
            pb.ScoreRequest(model="rm", items=[pb.ScoreItem(prompt=pb.Prompt(text="q"), steps=["a", "b"])]),
            pb.ScoreRequest(model="prm", items=[pb.ScoreItem(prompt=pb.Prompt(text="q"), steps=["a<step>"])]),
            pb.ScoreRequest(
                model="prm", step_aggregate="max", items=[pb.ScoreItem(prompt=pb.Prompt(text="q"), steps=["a"])]
            ),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Score(request, timeout=60)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        # an outcome model's items keep working as before steps existed, an unset response included
        empty = stub.Score(pb.ScoreRequest(model="rm", items=[pb.ScoreItem(prompt=pb.Prompt(text="q"))]), timeout=60)
        assert len(empty.scores) == 1 and not empty.steps


def test_the_wire_names_the_same_aggregates_as_the_bundle():
    from typing import get_args

    assert get_args(wire.StepAggregate) == STEP_AGGREGATES


def test_arbiter_eval_scores_a_prm_by_its_steps_as_the_server_does(prm_server, prm_bundle: Path, tmp_path: Path):
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:6]]
    (tmp_path / "solutions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = [{"prompt": r["question"], "chosen": right["solution"], "rejected": wrong["solution"]} for r in rows
             for right in r["solutions"][:4] if right["is_correct"] for wrong in r["solutions"][:4]
             if not wrong["is_correct"]]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    done = subprocess.run([sys.executable, "-m", "arbiter.cli", "eval", str(prm_bundle), "--data",
                           str(tmp_path / "pairs.jsonl"), "--solutions", str(tmp_path / "solutions.jsonl"),
                           "--step-separator", "\n", "--out", str(tmp_path / "eval")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "best_of_solutions.json").read_text())
    picked = []
    for row in rows:  # the server's pick: the highest min over the solution's lines as steps
        solutions = row["solutions"]
        answer = httpx.post(prm_server.url + "/v1/score", json={"model": "prm", "step_separator": "\n", "items": [
            {"prompt": row["question"], "response": s["solution"]} for s in solutions]}).json()  # fmt: skip
        top = np.asarray(answer["scores"]) == max(answer["scores"])
        picked.append(np.mean([s["is_correct"] for s, t in zip(solutions, top, strict=True) if t]))
    assert report["questions"] == 6 and report["reward_model"]["accuracy"] == pytest.approx(np.mean(picked))
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["pairs"] == len(pairs) > 0
