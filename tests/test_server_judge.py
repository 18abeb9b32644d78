"""The judge served: /v1/judge and gRPC Judge, /v1/constitutions, judge-backed scores through the client, the
errors when the judge's backend is down or slow (while reward models keep serving), a bad constitution, metrics;
and the OpenAI-compatible backend through the server against a real `transformers serve`."""

from __future__ import annotations

import json
import math
import re
import socket
import threading

import grpc
import httpx
import pytest

from arbiter.clients import RewardClient
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from tests.judge_server import transformers_serve
from tests.server import JUDGE_TOKENS, free_port, running_server

PAIR = {"prompt": "What is the capital of France?", "response_a": "Paris.", "response_b": "I like turtles."}


def judge(url: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(url + "/v1/judge", json=body, timeout=120, **kw)


def metric(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for found, value in re.findall(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", httpx.get(url + "/metrics").text, re.M):
        if all(f'{k}="{v}"' in found for k, v in labels.items()):
            total += float(value)
    return total


def test_constitutions_are_listed(server):
    listed = httpx.get(server.url + "/v1/constitutions").json()["constitutions"]
    (default,) = [c for c in listed if c["name"] == "default"]
    assert default["default"] and {"helpful", "honest", "harmless"} <= {p["name"] for p in default["principles"]}
    assert default["principles"][0]["rubric"]["5"]


def test_judge_over_http_and_grpc_with_the_local_model(server):
    body = {"mode": "pairwise", "principles": ["helpful", "honest"], "items": [PAIR]}
    answer = judge(server.url, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["backend"], result["model"], result["constitution"]) == ("local", "smollm2", "default")
    (verdict,) = result["verdicts"]
    assert [p["principle"] for p in verdict["principles"]] == ["helpful", "honest"]
    assert 0 < verdict["score"] < 1 and isinstance(verdict["inconsistent"], bool) and verdict["prompt_tokens"] > 0
    with grpc.insecure_channel(server.grpc_target) as channel:
        item = pb.JudgeItem(
            prompt=pb.Prompt(text=PAIR["prompt"]), response_a=PAIR["response_a"], response_b=PAIR["response_b"]
        )
        request = pb.JudgeRequest(mode="pairwise", principles=["helpful", "honest"], items=[item])
        over_grpc = reward_pb2_grpc.RewardServiceStub(channel).Judge(request, timeout=120)
    assert over_grpc.verdicts[0].score == verdict["score"]  # the same verdicts, now from the cache
    assert all(p.cached for p in over_grpc.verdicts[0].principles)
    assert metric(server.url, "arbiter_judge_verdicts_total", cached="true") >= 2
    assert metric(server.url, "arbiter_judge_cache_lookups", result="hit") >= 2
    assert metric(server.url, "arbiter_judge_pairwise_total") >= 4
    assert metric(server.url, "arbiter_judge_seconds_count", mode="pairwise") >= 1


def test_a_rationale_is_cut_at_judge_max_reasoning_tokens(server):
    body = {"mode": "absolute", "principles": ["helpful"], "items": [{"prompt": PAIR["prompt"], "response": "Paris."}]}
    answer = judge(server.url, {**body, "rationale": True})
    assert answer.status_code == 200, answer.text
    (verdict,) = answer.json()["verdicts"]
    # The rationale, then at most the 8-token reminder for a score line when none could be read from it.
    assert 0 < verdict["completion_tokens"] <= JUDGE_TOKENS + 8 and verdict["principles"][0]["rationale"]


def test_judge_backed_scores_compare_and_rank_through_the_client(server):
    # A deadline, not a speed target: the local judge generates on the CPU; a slow 2-core machine took over 120 s.
    for url in (server.url, server.grpc_url):
        with RewardClient(url, timeout=600) as client:
            answer = client.score("What is 2+2?", ["4", "a fish"], model="judge")
            assert answer.model == "judge" and answer.model_version.startswith("smollm2@default")
            assert all(0 <= s <= 1 for s in answer.scores) and len(answer.scores) == 2
            ranked = client.rank("What is 2+2?", ["4", "a fish"], model="judge:default")
            assert ranked.scores == answer.scores  # the same verdicts, from the cache
            assert ranked.order == sorted(range(2), key=lambda i: -answer.scores[i])
    with RewardClient(server.url, timeout=600) as client:
        (c,) = client.compare("Capital of France?", ["Paris."], ["Lyon."], model="judge").comparisons
    assert 0 < c.prob_a < 1 and math.isclose(c.prob_a, 1 / (1 + math.exp(c.score_b - c.score_a)), rel_tol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"constitution": "nope", "items": [{"prompt": "a", "response": "b"}]}, 404, "not_found"),
        ({"principles": ["nope"], "items": [{"prompt": "a", "response": "b"}]}, 404, "not_found"),
        ({"mode": "pairwise", "items": [{"prompt": "a", "response": "b"}]}, 422, "invalid_request"),
        ({"items": []}, 422, "invalid_request"),
        ({"items": [{"prompt": "a", "response": "b"}] * 65}, 413, "too_large"),
    ],
)
def test_judge_mistakes_are_4xx(server, body, status, code):
    answer = judge(server.url, body)
    assert answer.status_code == status and answer.json()["error"]["code"] == code


class SilentServer:
    """A real TCP server that accepts connections and never answers: what a hung judge backend looks like."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.sock.close()
        for connection in self.held:
            connection.close()


def test_judge_backend_down_or_slow_is_502_504_and_reward_models_keep_serving(bundle_dir, tmp_path):
    silent = SilentServer()
    down = f"http://127.0.0.1:{free_port()}/v1"
    try:
        for base_url, status, code, grpc_status in (
            (down, 502, "judge_backend_error", grpc.StatusCode.UNAVAILABLE),
            (f"http://127.0.0.1:{silent.port}/v1", 504, "judge_timeout", grpc.StatusCode.DEADLINE_EXCEEDED),
        ):
            flags = ("--bundles", f"rm={bundle_dir}", "--judge-backend", "openai", "--judge-base-url", base_url,
                     "--judge-model", "m", "--judge-timeout-s", "0.5")  # fmt: skip
            with running_server(tmp_path, *flags) as s:
                answer = judge(s.url, {"items": [{"prompt": "a", "response": "b"}], "rationale": False})
                assert answer.status_code == status and answer.json()["error"]["code"] == code
                assert base_url.removesuffix("/v1") not in answer.text  # backend internals stay in the log
                with grpc.insecure_channel(s.grpc_target) as channel:
                    item = pb.JudgeItem(prompt=pb.Prompt(text="a"), response="b")
                    with pytest.raises(grpc.RpcError) as raised:
                        reward_pb2_grpc.RewardServiceStub(channel).Judge(pb.JudgeRequest(items=[item]), timeout=60)
                assert raised.value.code() == grpc_status
                error = json.loads(dict(raised.value.trailing_metadata())["arbiter-error"])["error"]
                assert error["code"] == code
                scored = httpx.post(s.url + "/v1/score", json={"items": [{"prompt": "a", "response": "b"}]})
                assert scored.status_code == 200  # the reward model does not depend on the judge
                kind = "backend" if status == 502 else "timeout"
                assert metric(s.url, "arbiter_judge_errors_total", kind=kind) == 2
    finally:
        silent.close()


def test_judge_off_and_bad_constitution(bundle_dir, tmp_path):
    with running_server(tmp_path, "--bundles", str(bundle_dir), "--judge-backend", "off") as off:
        answer = judge(off.url, {"items": [{"prompt": "a", "response": "b"}]})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "judge_off"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: '1'\nprinciples: []\n")
    with running_server(tmp_path, "--bundles", str(bundle_dir), "--constitutions", str(bad), wait_ready=False) as s:
        for _ in range(100):
            ready = httpx.get(s.url + "/readyz")
            if ready.status_code == 503 and "failed" in ready.text:
                break
        assert ready.status_code == 503 and "constitutions" in ready.json()["error"]["details"]
        assert "bad.yaml" in ready.json()["error"]["details"]["constitutions"]


def test_openai_backend_through_the_server_on_transformers_serve(bundle_dir, tmp_path):
    """The whole path with a real OpenAI-compatible server. transformers serve gives no log-probabilities, so the
    judge parses the letter from the reply text ("parsed")."""
    with transformers_serve(tmp_path) as backend:
        flags = ("--bundles", str(bundle_dir), "--judge-backend", "openai", "--judge-base-url", backend.base_url,
                 "--judge-model", backend.model)  # fmt: skip
        with running_server(tmp_path, *flags) as s:
            answer = judge(s.url, {"mode": "pairwise", "principles": ["helpful"], "items": [PAIR]})
            if answer.status_code == 502:  # a weak judge may answer with neither letter: a clear 502 is right then
                assert "picked neither A nor B" in answer.json()["error"]["message"]
                return
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert (result["backend"], result["model"]) == ("openai", backend.model)
            part = result["verdicts"][0]["principles"][0]
            assert part["method"] == "parsed" and part["prob_a"] in (0.0, 0.5, 1.0)


def test_eval_measures_the_served_judge_by_the_reward_model_code(server, tmp_path):
    from arbiter.cli import main

    rows = [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "a fish"},
        {"prompt": "Say something kind.", "chosen": "You did well today.", "rejected": "Go away."},
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", server.url, "--served-model", "judge", "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    with RewardClient(server.url, timeout=120) as client:  # the verdicts again, from the judge's cache
        wins = [
            (s := client.score(r["prompt"], [r["chosen"], r["rejected"]], model="judge").scores)[0] > s[1] for r in rows
        ]
    assert report["pairs"] == 2 and report["accuracy"] == sum(wins) / 2
