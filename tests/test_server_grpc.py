"""The gRPC face on a real `arbiter serve`: every RPC, every status, health, reflection, and the generated code."""

from __future__ import annotations

import filecmp
import json
import re

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from arbiter.clients.v1.generate import GENERATED, HERE, generate
from tests.server import running_server


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield reward_pb2_grpc.RewardServiceStub(channel)


def item(prompt: str | list[dict[str, str]], response: str) -> pb.ScoreItem:
    if isinstance(prompt, str):
        return pb.ScoreItem(prompt=pb.Prompt(text=prompt), response=response)
    messages = [pb.ChatMessage(**m) for m in prompt]
    return pb.ScoreItem(prompt=pb.Prompt(chat=pb.Conversation(messages=messages)), response=response)


def status_of(call) -> tuple[grpc.StatusCode, dict]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    trailing = dict(error.trailing_metadata() or ())
    body = json.loads(trailing["arbiter-error"]) if "arbiter-error" in trailing else {}
    return error.code(), body


def metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_score_matches_http_and_the_bundle(server, stub, reference):
    chat = [{"role": "user", "content": "Say something kind."}]
    request = pb.ScoreRequest(items=[item("2+2?", "4"), item(chat, "You matter.")], normalize=True)
    answer, call = stub.Score.with_call(request, metadata=(("x-request-id", "grpc-42"),))
    assert ("x-request-id", "grpc-42") in call.initial_metadata()
    assert answer.model == "rm" and answer.model_version == "1"
    assert np.allclose(answer.scores, reference(["2+2?", chat], ["4", "You matter."]), atol=1e-5)
    body = {"items": [{"prompt": "2+2?", "response": "4"}, {"prompt": chat, "response": "You matter."}]}
    over_http = httpx.post(server.url + "/v1/score", json={**body, "normalize": True}).json()
    assert list(answer.scores) == over_http["scores"]  # one runtime: the very same numbers
    assert list(answer.normalized_scores) == over_http["normalized_scores"]
    assert list(answer.tokens) == over_http["tokens"] and list(answer.truncated) == [False, False]


def test_compare_rank_and_list_models(stub, reference):
    pair = pb.ComparePair(prompt=pb.Prompt(text="2+2?"), response_a="4", response_b="5")
    (c,) = stub.Compare(pb.CompareRequest(pairs=[pair])).comparisons
    a, b = reference(["2+2?", "2+2?"], ["4", "5"])
    assert np.isclose(c.score_a, a, atol=1e-5) and np.isclose(c.prob_a, 1 / (1 + np.exp(b - a)), atol=1e-5)
    ranked = stub.Rank(pb.RankRequest(prompt=pb.Prompt(text="Say hi"), responses=["hello", "go away", "hi!"]))
    assert sorted(ranked.order) == [0, 1, 2]
    assert [ranked.scores[i] for i in ranked.order] == sorted(ranked.scores, reverse=True)
    (info,) = stub.ListModels(pb.ListModelsRequest()).models
    assert info.name == "rm" and info.default and info.max_length > 0 and info.HasField("normalization")
    hh = info.evaluation.by_source["hh_rlhf_harmless"]
    assert info.evaluation.overall.accuracy == info.eval_accuracy and hh.pairs == info.evaluation.overall.pairs
    assert hh.accuracy_low < hh.accuracy < hh.accuracy_high and hh.HasField("model_prefers_longer")


def test_score_stream_answers_every_request_by_id_and_survives_bad_ones(stub, reference):
    requests = [
        pb.ScoreStreamRequest(id="a", request=pb.ScoreRequest(items=[item("2+2?", "4")])),
        pb.ScoreStreamRequest(id="bad", request=pb.ScoreRequest(items=[])),
        pb.ScoreStreamRequest(id="lost", request=pb.ScoreRequest(model="nope", items=[item("x", "y")])),
        pb.ScoreStreamRequest(id="b", request=pb.ScoreRequest(items=[item("2+2?", "5"), item("hi", "hello")])),
    ]
    answers = {a.id: a for a in stub.ScoreStream(iter(requests))}
    assert set(answers) == {"a", "bad", "lost", "b"}
    assert np.allclose(answers["a"].response.scores, reference(["2+2?"], ["4"]), atol=1e-5)
    assert np.allclose(answers["b"].response.scores, reference(["2+2?", "hi"], ["5", "hello"]), atol=1e-5)
    bad, lost = answers["bad"].error, answers["lost"].error
    assert (bad.grpc_status, bad.code) == ("INVALID_ARGUMENT", "invalid_input")
    assert (lost.grpc_status, lost.code) == ("NOT_FOUND", "model_not_found") and "rm" in lost.details_json


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (pb.ScoreRequest(items=[]), grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
        (
            pb.ScoreRequest(items=[pb.ScoreItem(response="no prompt")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_input",
        ),
        (
            pb.ScoreRequest(items=[item([{"role": "robot", "content": "x"}], "y")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_input",
        ),
        (pb.ScoreRequest(items=[item("p", "r")] * 65), grpc.StatusCode.INVALID_ARGUMENT, "too_large"),
        (pb.ScoreRequest(model="nope", items=[item("p", "r")]), grpc.StatusCode.NOT_FOUND, "model_not_found"),
    ],
)
def test_client_mistakes_get_the_matching_status_and_json_error(stub, request_, status, code):
    got, body = status_of(lambda: stub.Score(request_))
    assert got == status and body["error"]["code"] == code and body["error"]["message"]
    assert len(stub.Score(pb.ScoreRequest(items=[item("p", "r")])).scores) == 1  # still serving


def test_rank_needs_two_responses(stub):
    got, body = status_of(lambda: stub.Rank(pb.RankRequest(prompt=pb.Prompt(text="p"), responses=["one"])))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and body["error"]["details"][0]["loc"] == ["responses"]


def test_health_service_and_reflection(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "arbiter.v1.RewardService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"arbiter.v1.RewardService", "grpc.health.v1.Health"} <= services


def test_deadline_exceeded_drops_the_queued_work(server, stub):
    before = metric(server, "arbiter_sequences_dropped_total")
    slow = "a response long enough to take a while " * 4
    many = pb.ScoreRequest(items=[item(f"prompt {i}", slow) for i in range(64)])
    got = None
    for _ in range(3):  # each try queues 64 sequences that take far longer than the deadline to run
        with pytest.raises(grpc.RpcError) as raised:
            stub.Score(many, timeout=0.05)
        got = raised.value.code()
    assert got == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(stub.Score(pb.ScoreRequest(items=[item("p", "r")]), timeout=30).scores) == 1
    assert metric(server, "arbiter_sequences_dropped_total") > before
    text = httpx.get(server.url + "/metrics").text
    assert 'route="/arbiter.v1.RewardService/Score",status="CANCELLED"' in text


def test_queue_full_is_resource_exhausted_with_retry_after(bundle_dir, tmp_path):
    flags = ("--bundles", str(bundle_dir), "--max-queue", "8", "--max-wait-ms", "300", "--max-batch-size", "1000")
    with running_server(tmp_path, *flags) as small, grpc.insecure_channel(small.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        four = pb.ScoreRequest(items=[item("p", "r")] * 4)
        futures = [stub.Score.future(four) for _ in range(12)]
        refused = [f for f in futures if f.exception() is not None]
        assert refused and len(refused) < 12
        error = refused[0].exception()
        trailing = dict(error.trailing_metadata())
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and int(trailing["retry-after"]) >= 1
        assert json.loads(trailing["arbiter-error"])["error"]["code"] == "queue_full"
        assert len(stub.Score(pb.ScoreRequest(items=[item("p", "r")])).scores) == 1


def test_not_ready_is_unavailable_and_health_says_not_serving(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    with (
        running_server(tmp_path, "--bundles", str(broken), wait_ready=False) as bad,
        grpc.insecure_channel(bad.grpc_target) as channel,
    ):
        grpc.channel_ready_future(channel).result(timeout=30)
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        one = pb.ScoreRequest(items=[item("a", "b")])
        got, body = status_of(lambda: reward_pb2_grpc.RewardServiceStub(channel).Score(one))
        assert got == grpc.StatusCode.UNAVAILABLE and body["error"]["code"] == "not_ready"


def test_generated_code_is_current(tmp_path):
    """Fails when reward.proto changed without `make proto`."""
    generate(tmp_path)
    stale = [name for name in GENERATED if not filecmp.cmp(tmp_path / name, HERE / name, shallow=False)]
    assert not stale, f"stale generated code {stale}: run `make proto`"
