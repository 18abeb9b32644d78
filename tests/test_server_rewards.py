"""Reward specs served: /v1/reward and gRPC Reward against hand computations on the real bundle, the client and the
TRL adapter with a spec name, validation at load, reload (admin call and SIGHUP) under load without a failed request,
and the telemetry endpoint and metrics."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import grpc
import httpx
import numpy as np
import pytest

from arbiter.bundle import load_bundle
from arbiter.clients import RewardClient
from arbiter.clients.adapters.trl import ArbiterReward
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from tests.server import running_server

PROMPTS = ["What is the capital of France?", "What is the capital of France?", "Say something kind."]
RESPONSES = ["Paris.", "It is Paris, a city of about two million people.", "You are doing great today."]
MIX = """name: mix
version: "3"
description: the reward model, normalized, less a length penalty
components:
  - {name: rm, kind: model, transforms: [{kind: normalize}]}
  - {name: words, kind: rule, rule: length, unit: words}
reward:
  - {component: rm, weight: 1.0}
  - {component: words, weight: -0.05}
"""
GROUPED = """name: grouped
version: "1"
components:
  - {name: rm, kind: model, transforms: [{kind: group_norm}]}
reward:
  - {component: rm, weight: 1.0}
"""

RUNNING = """name: running
version: "1"
components:
  - {name: rm, kind: model, transforms: [{kind: running_norm, momentum: 0.5}]}
reward:
  - {component: rm, weight: 1.0}
"""


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("specs")
    (folder / "mix.yaml").write_text(MIX)
    (folder / "grouped.yaml").write_text(GROUPED)
    (folder / "running.yaml").write_text(RUNNING)
    return folder


@pytest.fixture(scope="module")
def spec_server(bundle_dir, specs, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    flags = ("--bundles", f"rm={bundle_dir}", "--reward-specs", str(specs), "--judge-backend", "off",
             "--reward-state-path", str(logs / "state.sqlite"))  # fmt: skip
    with running_server(logs, *flags) as s:
        yield s


def expected_mix(bundle_dir, reference) -> np.ndarray:
    norm = load_bundle(bundle_dir).manifest.normalization
    raw = reference(PROMPTS, RESPONSES)
    return (raw - norm.mean) / norm.std - 0.05 * np.array([len(r.split()) for r in RESPONSES])


def test_reward_matches_hand_computation_over_http_and_grpc(spec_server, bundle_dir, reference):
    items = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    answer = httpx.post(spec_server.url + "/v1/reward", json={"spec": "mix", "items": items}, timeout=60).json()
    assert (answer["spec"], answer["spec_version"]) == ("mix", "3")
    assert np.allclose(answer["rewards"], expected_mix(bundle_dir, reference), atol=1e-5)
    assert answer["components"]["words"] == [1.0, 10.0, 5.0]
    with grpc.insecure_channel(spec_server.grpc_target) as channel:
        request = pb.RewardRequest(
            spec="mix",
            items=[
                pb.RewardItem(prompt=pb.Prompt(text=p), response=r) for p, r in zip(PROMPTS, RESPONSES, strict=True)
            ],
        )
        over_grpc = reward_pb2_grpc.RewardServiceStub(channel).Reward(request, timeout=60)
    assert np.allclose(over_grpc.rewards, answer["rewards"], atol=1e-9)
    assert list(over_grpc.components["words"].values) == [1.0, 10.0, 5.0]


def test_client_and_trl_adapter_take_a_spec_name(spec_server, bundle_dir, reference):
    for url in (spec_server.url, spec_server.grpc_url):
        with RewardClient(url) as client:
            assert np.allclose(
                client.reward(PROMPTS, RESPONSES, spec="mix").rewards, expected_mix(bundle_dir, reference)
            )
            grouped = client.reward(PROMPTS, RESPONSES, spec="grouped", groups=["france", "france", "kind"]).rewards
            raw = reference(PROMPTS, RESPONSES)
            pair = raw[:2]
            assert np.allclose(grouped[:2], (pair - pair.mean()) / (pair.std() + 1e-6), atol=1e-5) and grouped[2] == 0
    reward = ArbiterReward(spec_server.url, spec="mix")
    assert np.allclose(reward(prompts=PROMPTS, completions=RESPONSES), expected_mix(bundle_dir, reference))


def test_spec_list_stats_and_metrics(spec_server):
    listed = {s["name"]: s for s in httpx.get(spec_server.url + "/v1/reward-specs").json()["specs"]}
    assert {"mix", "grouped", "default"} <= set(listed) and listed["mix"]["components"] == ["rm", "words"]
    assert listed["default"]["default"]
    stats = httpx.get(spec_server.url + "/v1/reward-specs/mix/stats").json()
    assert stats["spec"] == "mix" and stats["version"] == "3" and stats["count"] >= 3
    metrics = httpx.get(spec_server.url + "/metrics").text
    assert re.search(r'^arbiter_reward_mean\{spec="mix"\} \S+$', metrics, re.M)
    missing = httpx.post(
        spec_server.url + "/v1/reward", json={"spec": "nope", "items": [{"prompt": "a", "response": "b"}]}
    )
    assert missing.status_code == 404
    no_group = httpx.post(
        spec_server.url + "/v1/reward", json={"spec": "grouped", "items": [{"prompt": "a", "response": "b"}]}
    )
    assert no_group.status_code == 400 and "group" in no_group.json()["error"]["message"]


def test_a_bad_spec_keeps_the_server_not_ready(bundle_dir, tmp_path):
    (tmp_path / "bad.yaml").write_text(
        MIX.replace("name: mix", "name: bad").replace("kind: model,", "kind: model, model: ghost,")
    )
    flags = ("--bundles", f"rm={bundle_dir}", "--reward-specs", str(tmp_path / "bad.yaml"), "--judge-backend", "off")
    with running_server(tmp_path, *flags, wait_ready=False) as s:
        for _ in range(100):
            ready = httpx.get(s.url + "/readyz")
            if "reward_specs" in ready.text:
                break
            time.sleep(0.1)
        assert ready.status_code == 503 and "ghost" in ready.json()["error"]["details"]["reward_specs"]


def test_reload_under_load_without_a_failed_request(bundle_dir, specs, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "mix.yaml").write_text(MIX)
    flags = ("--bundles", f"rm={bundle_dir}", "--reward-specs", str(folder), "--judge-backend", "off", "--admin-open")
    with running_server(tmp_path, *flags) as s:

        async def load(stop: asyncio.Event) -> list[int]:
            codes = []
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as http:
                body = {"spec": "mix", "items": [{"prompt": "p", "response": "r"}] * 4}
                while not stop.is_set():
                    codes.append((await http.post("/v1/reward", json=body)).status_code)
            return codes

        async def reloads() -> tuple[list[int], set[str]]:
            stop = asyncio.Event()
            callers = [asyncio.create_task(load(stop)) for _ in range(4)]
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as http:
                (folder / "extra.yaml").write_text(MIX.replace("name: mix", "name: extra"))
                assert (await http.post("/v1/admin/reload")).status_code == 200
                (folder / "broken.yaml").write_text("name: broken\nversion: '1'\ncomponents: []\nreward: []\n")
                refused = await http.post("/v1/admin/reload")
                assert refused.status_code == 400 and "broken" in refused.json()["error"]["message"]
                (folder / "broken.yaml").unlink()
                (folder / "late.yaml").write_text(MIX.replace("name: mix", "name: late"))
                s.process.send_signal(signal.SIGHUP)
                for _ in range(50):
                    names = {x["name"] for x in (await http.get("/v1/reward-specs")).json()["specs"]}
                    if "late" in names:
                        break
                    await asyncio.sleep(0.1)
            stop.set()
            return [code for caller in callers for code in await caller], names

        codes, names = asyncio.run(reloads())
        assert codes and set(codes) == {200}  # not one request failed while the specs were swapped
        assert {"mix", "extra", "late"} <= names and "broken" not in names


def test_canaries_are_scored_on_a_schedule(bundle_dir, tmp_path):
    canaries = tmp_path / "canaries.jsonl"
    rows = [
        {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Bananas are yellow."},
        {"prompt": "Say something kind.", "chosen": "You are doing great.", "rejected": "Go away."},
        {"prompt": "2+2?", "chosen": "4", "rejected": "22"},
    ]
    canaries.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ("--bundles", f"rm={bundle_dir}", "--judge-backend", "off", "--reward-state-path", "",
             "--reward-canaries", str(canaries), "--reward-canary-interval-s", "0.3")  # fmt: skip
    with running_server(tmp_path, *flags) as s:
        for _ in range(100):
            canary = httpx.get(s.url + "/v1/reward-specs/default/stats").json()["canary"]
            if canary and len(canary["history"]) >= 2:
                break
            time.sleep(0.1)
        assert canary["pairs"] == 3 and len(canary["history"]) >= 2  # measured again and again
        latest = canary["latest"]
        assert latest["accuracy"] in (0.0, 1 / 3, 2 / 3, 1.0) and latest["baseline"] == canary["history"][0]["accuracy"]
        metrics = httpx.get(s.url + "/metrics").text
        assert re.search(r'^arbiter_reward_canary_accuracy\{spec="default"\} \S+$', metrics, re.M)


def test_eval_measures_a_served_model_and_specs_by_the_same_code_as_the_bundle(
    spec_server, bundle_dir, reference, trained_run, tmp_path
):
    from arbiter.cli import main
    from arbiter.cli_options import load_data_flag
    from arbiter.training.evaluate import metrics, score_pairs

    held_out = trained_run / "eval.jsonl"
    groups = load_data_flag([str(held_out)])
    in_process = metrics(score_pairs(groups, reference))
    norm = load_bundle(bundle_dir).manifest.normalization

    def mix(prompts, responses):  # the spec `mix` by hand
        words = np.array([len(r.split()) for r in responses])
        return (reference(prompts, responses) - norm.mean) / norm.std - 0.05 * words

    by_hand = metrics(score_pairs(groups, mix))
    assert by_hand["accuracy"] != in_process["accuracy"]  # the length penalty changes some answers
    runs = {  # what was scored, over which face: what it must equal
        "model-http": ([spec_server.url, "--served-model", "rm"], in_process),
        "model-grpc": ([spec_server.grpc_url], in_process),
        # group_norm of a lone response is 0: a pair split across requests (7 is odd) would be a tie, counted wrong
        "grouped": ([spec_server.url, "--spec", "grouped", "--max-items", "7"], in_process),
        "mix": ([spec_server.grpc_url, "--spec", "mix"], by_hand),
    }
    for name, (target, expected) in runs.items():
        assert main(["eval", *target, "--data", str(held_out), "--out", str(tmp_path / name)]) == 0
        served = json.loads((tmp_path / name / "eval.json").read_text())
        assert served["pairs"] == expected["pairs"] == len(groups), name
        assert served["accuracy"] == expected["accuracy"], name
        assert served["length_controlled"] == expected["length_controlled"], name
        assert (tmp_path / name / "accuracy.png").is_file()
    assert main(["eval", spec_server.url, "--served-model", "nope", "--data", str(held_out)]) == 1
    assert main(["eval", str(bundle_dir), "--spec", "mix", "--data", str(held_out)]) == 2


def test_update_stats_false_scores_without_moving_running_statistics_or_telemetry(spec_server, trained_run):
    from arbiter.cli import main

    items = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=True)]

    def reward(batch: list[dict], **flags: bool) -> list[float]:
        answer = httpx.post(spec_server.url + "/v1/reward", json={"spec": "running", "items": batch, **flags})
        assert answer.status_code == 200, answer.text
        return answer.json()["rewards"]

    def count() -> int:
        return httpx.get(spec_server.url + "/v1/reward-specs/running/stats").json()["count"]

    reward(items)  # the first batch seeds the statistics
    seen = count()
    look = reward(items, update_stats=False)
    with grpc.insecure_channel(spec_server.grpc_target) as channel:
        request = pb.RewardRequest(
            spec="running",
            items=[
                pb.RewardItem(prompt=pb.Prompt(text=p), response=r) for p, r in zip(PROMPTS, RESPONSES, strict=True)
            ],
            update_stats=False,
        )
        over_grpc = reward_pb2_grpc.RewardServiceStub(channel).Reward(request, timeout=60)
    assert np.allclose(over_grpc.rewards, look, atol=1e-9)
    held_out = trained_run / "eval.jsonl"
    assert main(["eval", spec_server.url, "--spec", "running", "--data", str(held_out)]) == 0
    assert reward(items, update_stats=False) == look and count() == seen  # evaluating moved nothing
    reward(items[:1])  # a batch of another mean, folded in as every request is by default
    assert reward(items, update_stats=False) != look and count() == seen + 1


def test_spec_requests_carry_whole_runs_of_responses_to_one_prompt():
    from arbiter.training.served_scorer import requests

    chat = [{"role": "user", "content": "hi"}]
    prompts = ["a", "a", "a", "b", "b", chat, chat, "c", *["d"] * 6]
    packed = requests(prompts, max_items=4)
    assert packed == [[range(0, 3)], [range(3, 5), range(5, 7)], [range(7, 8)], [range(8, 14)]]
    assert [i for part in packed for run in part for i in run] == list(range(len(prompts)))  # order kept
