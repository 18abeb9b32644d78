"""Encode, admit, then run, on a real server over HTTP and gRPC: nothing over a limit reaches a model (the batch
metrics do not move), limits count in the units the docs name, /v1/reward and the judge are held to them, text
fields are capped in the wire models, and the server's own scoring (annotation statistics) fits inside them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from arbiter.clients.protocol import MAX_TEXT_CHARS
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from tests.server import RunningServer, add_annotator, running_server

LONG = "word " * 400  # far past the test bundle's 64 tokens: every such item scores 64 tokens after truncation


def metric(server: RunningServer, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def batches(server: RunningServer) -> float:
    return metric(server, "arbiter_batch_size_count")


@pytest.fixture(scope="module")
def small(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Limits small enough to reach: 4 items, 150 tokens (two truncated items fit, three do not), 2,000 judged
    characters; the in-process judge (SmolLM2) is on, so a judge request that got through would reach a model."""
    tmp = tmp_path_factory.mktemp("admission")
    db = f"sqlite:///{tmp / 'annotations.sqlite'}"
    flags = ["--bundles", f"rm={bundle_dir}", "--max-items", "4", "--max-request-tokens", "150"]
    flags += ["--judge-max-chars", "2000", "--annotation-db", db]
    with running_server(tmp, *flags) as server:
        server.db = db  # type: ignore[attr-defined]  # this fixture adds the store URL to its RunningServer
        yield server


def grpc_error(call) -> tuple[grpc.StatusCode, dict]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), json.loads(dict(raised.value.trailing_metadata())["arbiter-error"])


def score_items(n: int, response: str) -> list[pb.ScoreItem]:
    return [pb.ScoreItem(prompt=pb.Prompt(text="hi"), response=response) for _ in range(n)]


def test_the_token_limit_is_checked_before_anything_is_queued(small: RunningServer):
    before = batches(small)
    over = httpx.post(small.url + "/v1/score", json={"items": [{"prompt": "hi", "response": LONG}] * 3})
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_large"
    assert "192 tokens" in over.json()["error"]["message"]  # 3 x 64, after truncation
    with grpc.insecure_channel(small.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        status, body = grpc_error(lambda: stub.Score(pb.ScoreRequest(items=score_items(3, LONG))))
        assert body["error"]["code"] == "too_large" and status == grpc.StatusCode.INVALID_ARGUMENT
        rank = pb.RankRequest(prompt=pb.Prompt(text="hi"), responses=[LONG] * 3)
        assert grpc_error(lambda: stub.Rank(rank))[1]["error"]["code"] == "too_large"
    assert batches(small) == before  # nothing over the limit reached the model
    fits = httpx.post(small.url + "/v1/score", json={"items": [{"prompt": "hi", "response": LONG}] * 2})
    assert fits.status_code == 200 and fits.json()["tokens"] == [64, 64]
    assert batches(small) > before  # and the metric does move when a model runs


def test_reward_is_held_to_the_token_limit(small: RunningServer):
    before = batches(small)
    over = httpx.post(small.url + "/v1/reward", json={"items": [{"prompt": "hi", "response": LONG}] * 3})
    assert over.status_code == 413 and "tokens" in over.json()["error"]["message"]
    with grpc.insecure_channel(small.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        items = [pb.RewardItem(prompt=pb.Prompt(text="hi"), response=LONG)] * 3
        assert grpc_error(lambda: stub.Reward(pb.RewardRequest(items=items)))[1]["error"]["code"] == "too_large"
    assert batches(small) == before
    five = httpx.post(small.url + "/v1/reward", json={"items": [{"prompt": "hi", "response": "ok"}] * 5})
    assert five.status_code == 413 and "5 items" in five.json()["error"]["message"]


def test_compare_counts_pairs(small: RunningServer):
    pair = {"prompt": "hi", "response_a": "hello", "response_b": "go away"}
    four = httpx.post(small.url + "/v1/compare", json={"pairs": [pair] * 4})
    assert four.status_code == 200 and len(four.json()["comparisons"]) == 4  # 4 pairs fit --max-items 4
    five = httpx.post(small.url + "/v1/compare", json={"pairs": [pair] * 5})
    assert five.status_code == 413 and "5 pairs" in five.json()["error"]["message"]
    with grpc.insecure_channel(small.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        pairs = [pb.ComparePair(prompt=pb.Prompt(text="hi"), response_a="a", response_b="b")] * 4
        assert len(stub.Compare(pb.CompareRequest(pairs=pairs)).comparisons) == 4


def test_judge_inputs_are_limited_before_the_backend(small: RunningServer):
    judged = metric(small, "arbiter_judge_seconds_count")
    long_item = {"prompt": "hi", "response": "x" * 3000}
    over = httpx.post(small.url + "/v1/judge", json={"items": [long_item]}, timeout=60)
    assert over.status_code == 413 and "3002 characters" in over.json()["error"]["message"]
    as_model = httpx.post(small.url + "/v1/score", json={"model": "judge", "items": [long_item]}, timeout=60)
    assert as_model.status_code == 413
    with grpc.insecure_channel(small.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        item = pb.JudgeItem(prompt=pb.Prompt(text="hi"), response="x" * 3000)
        assert grpc_error(lambda: stub.Judge(pb.JudgeRequest(items=[item])))[1]["error"]["code"] == "too_large"
    assert metric(small, "arbiter_judge_seconds_count") == judged  # the backend saw none of it


def test_text_fields_are_capped_in_the_wire_models(small: RunningServer):
    huge = "y " * (MAX_TEXT_CHARS // 2 + 1)  # one character over the cap, and a token per two characters
    refused = httpx.post(small.url + "/v1/score", json={"items": [{"prompt": "hi", "response": huge}]}, timeout=60)
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["type"] == "string_too_long"
    with grpc.insecure_channel(small.grpc_target, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        status, body = grpc_error(lambda: stub.Score(pb.ScoreRequest(items=score_items(1, huge))))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and body["error"]["code"] == "invalid_input"
    under = httpx.post(
        small.url + "/v1/score", json={"items": [{"prompt": "hi", "response": huge[:MAX_TEXT_CHARS]}]}, timeout=60
    )
    assert under.status_code == 200 and under.json()["truncated"] == [True]
    assert httpx.get(small.url + "/healthz").status_code == 200


def test_annotation_statistics_fit_inside_the_limits(small: RunningServer):
    """More preferred pairs than a request may carry (10 against --max-items 4, and 150 tokens): the statistics
    score them in requests that fit, instead of failing with 413."""
    lead = add_annotator(small.db, "lead", "lead")  # type: ignore[attr-defined]  # set by the `small` fixture
    headers = {"Authorization": f"Bearer {lead}"}
    annotator = httpx.post(small.url + "/v1/annotation/annotators", headers=headers, json={"name": "ann"}).json()
    tasks = [
        {"prompt": f"question {i}?", "responses": [{"text": f"careful {i} " + LONG}, {"text": f"rude {i}"}]}
        for i in range(10)
    ]
    assert httpx.post(small.url + "/v1/annotation/tasks", headers=headers, json={"tasks": tasks}).status_code == 201
    as_annotator = {"Authorization": f"Bearer {annotator['key']}"}
    while (view := httpx.post(small.url + "/v1/annotation/next", headers=as_annotator)).status_code == 200:
        task = view.json()
        label = next(r["label"] for r in task["responses"] if r["text"].startswith("careful"))
        answer = {"choice": label, "strength": "better"}
        saved = httpx.post(
            f"{small.url}/v1/annotation/tasks/{task['task_id']}/annotations", headers=as_annotator, json=answer
        )
        assert saved.status_code == 201
    stats = httpx.get(small.url + "/v1/annotation/stats", headers=headers, timeout=120)
    assert stats.status_code == 200, stats.text
    assert stats.json()["reward_model"]["comparisons"] == 10


@pytest.mark.parametrize("route", ["/v1/score", "/v1/reward"])
def test_a_lone_surrogate_is_refused_with_the_request_id(small: RunningServer, route: str):
    """JSON may escape a lone surrogate ("\\ud800"), which no tokenizer takes: once a 500 that dropped the
    connection. The wire models refuse it now (422, as any string they cannot take); the builders' own check
    (test_render) stays for callers inside the process. gRPC cannot carry one at all: protobuf strings are UTF-8."""
    body = b'{"items": [{"prompt": "hi", "response": "ok \\ud800"}]}'
    headers = {"content-type": "application/json", "x-request-id": "surrogate-1"}
    answer = httpx.post(small.url + route, content=body, headers=headers)
    error = answer.json()["error"]
    assert (answer.status_code, error["code"], error["request_id"]) == (422, "invalid_request", "surrogate-1"), error
    assert error["details"][0]["loc"][-1] == "response", error
    assert httpx.post(small.url + route, json={"items": [{"prompt": "hi", "response": "ok"}]}).status_code == 200
