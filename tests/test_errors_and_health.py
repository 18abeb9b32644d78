"""One error body on both faces (and the same RewardServerError from either transport), what a bug answers, what
callers are never told (the judge backend's URL and credentials), and readiness by component: /readyz and the gRPC
health service on real servers. The store's side of it is in test_faults."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper

from arbiter.bundle.checksums import sha256_file
from arbiter.clients import Retry, RewardClient, RewardServerError
from arbiter.clients.protocol import ErrorBody
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from arbiter.service import logs
from arbiter.service.http.app import create_app
from arbiter.service.runtime.runtime import Runtime
from arbiter.service.settings import ServerSettings
from tests.server import RunningServer, free_port, running_server
from tests.test_access import bearer, key_file
from tests.test_server_judge import SilentServer

MAX_ITEMS, MAX_BODY = 2, 4096
ONE = {"items": [{"prompt": "hi", "response": "hello"}]}
NO_RETRY = Retry(attempts=1)


@pytest.fixture(scope="module")
def strict(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with small limits, and a judge pointed at a closed port through a URL holding a credential."""
    flags = ["--bundles", f"rm={bundle_dir}", "--max-items", str(MAX_ITEMS), "--max-body-bytes", str(MAX_BODY)]
    judge = ["--judge-backend", "openai", "--judge-model", "m", "--judge-timeout-s", "0.5"]
    closed = f"http://user:secret@127.0.0.1:{free_port()}/v1"
    with running_server(tmp_path_factory.mktemp("strict"), *flags, *judge, "--judge-base-url", closed) as server:
        yield server


def client_error(url: str, *args: object, **kw: object) -> RewardServerError:
    with RewardClient(url, retry=NO_RETRY) as client, pytest.raises(RewardServerError) as raised:
        client.score(*args, **kw)
    return raised.value


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        ({"responses": ["a"] * (MAX_ITEMS + 1)}, 413, "too_large"),
        ({"responses": ["a"], "model": "ghost"}, 404, "model_not_found"),
    ],
    ids=["too_many_items", "no_such_model"],
)
def test_both_transports_raise_the_same_error(strict, call, status, code):
    over_http = client_error(strict.url, "p", **call)
    over_grpc = client_error(strict.grpc_url, "p", **call)
    assert (over_http.status, over_http.code) == (over_grpc.status, over_grpc.code) == (status, code)
    assert over_http.request_id and over_grpc.request_id and over_http.request_id != over_grpc.request_id


def test_every_error_body_has_the_request_id_and_the_status(strict):
    """Route errors, schema errors, the router's own 404, the body limit and the gRPC trailer: one shape."""
    too_many = {"items": ONE["items"] * (MAX_ITEMS + 1)}
    big, json_type = b"x" * (MAX_BODY + 1), {"content-type": "application/json"}

    def ask(name: str, method: str, path: str, **kw: object) -> httpx.Response:
        headers = {"x-request-id": f"{name}-1", **kw.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.request(method, strict.url + path, headers=headers, **kw)  # type: ignore[arg-type]

    answers = {
        "route": ask("route", "POST", "/v1/score", json=too_many),
        "schema": ask("schema", "POST", "/v1/score", json={"items": []}),
        "router": ask("router", "GET", "/no/such/route"),
        "media": ask("media", "POST", "/v1/score", content=b"items=1"),
        "body": ask("body", "POST", "/v1/score", content=big, headers=json_type),
    }
    for name, answer in answers.items():
        error = answer.json()["error"]
        assert ErrorBody.model_validate(answer.json()).error.code == error["code"], name  # the wire's schema holds
        assert answer.headers["x-request-id"] == error["request_id"] == f"{name}-1", name
        assert error["status"] == answer.status_code, name
    assert [a.status_code for a in answers.values()] == [413, 422, 404, 415, 413]

    with grpc.insecure_channel(strict.grpc_target) as channel, pytest.raises(grpc.RpcError) as raised:
        items = [pb.ScoreItem(prompt=pb.Prompt(text="p"), response="r")] * (MAX_ITEMS + 1)
        reward_pb2_grpc.RewardServiceStub(channel).Score(
            pb.ScoreRequest(items=items), metadata=(("x-request-id", "grpc-1"),)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailer = ErrorBody.model_validate_json(dict(raised.value.trailing_metadata())["arbiter-error"]).error.model_dump()
    assert (trailer["code"], trailer["status"], trailer["request_id"]) == ("too_large", 413, "grpc-1")


def test_a_chunked_body_over_the_limit_is_413(strict):
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit can only be found by counting
        yield b'{"items": [{"prompt": "'
        for _ in range(MAX_BODY // 512 + 1):
            yield b"x" * 512
        yield b'", "response": "r"}]}'

    headers = {"content-type": "application/json", "x-request-id": "chunked-1"}
    answer = httpx.post(strict.url + "/v1/score", content=chunks(), headers=headers)
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"
    assert answer.json()["error"]["request_id"] == "chunked-1"
    assert httpx.post(strict.url + "/v1/score", json=ONE).status_code == 200


def test_a_bug_is_a_json_500_with_the_request_id_logged(caplog):
    """In process: no route raises an unexpected exception on purpose, so the test adds one (a stand-in for a bug).
    The answer must come from inside the request's context, and the app must not raise on (uvicorn would drop the
    connection)."""
    runtime = Runtime(ServerSettings(bundles=[], annotation_db=None, judge_backend="off"))
    app = create_app(runtime.settings, runtime)

    @app.get("/v1/stand-in-bug")
    async def stand_in_bug() -> None:
        raise RuntimeError("a bug nobody foresaw")

    caplog.handler.setFormatter(logs.JsonFormatter())  # formats as each record is logged, request id included

    async def call() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # raises what the app raises
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            bug = await client.get("/v1/stand-in-bug", headers={"x-request-id": "bug-1"})
            return [bug, await client.get("/healthz")]

    with caplog.at_level(logging.INFO, logger="arbiter"):
        bug, after = asyncio.run(call())
    error = bug.json()["error"]
    assert bug.status_code == 500 and bug.headers["x-request-id"] == "bug-1"
    assert (error["code"], error["status"], error["request_id"]) == ("internal", 500, "bug-1")
    assert "a bug nobody foresaw" not in bug.text
    lines = [json.loads(line) for line in caplog.text.splitlines()]
    (logged,) = [line for line in lines if line["msg"] == "unexpected error"]
    assert logged["request_id"] == "bug-1" and "a bug nobody foresaw" in logged["exception"]
    assert any(line["msg"] == "request" and line["status"] == 500 and line["request_id"] == "bug-1" for line in lines)
    assert after.status_code == 200


def test_the_judge_backend_url_and_credentials_stay_in_the_log(strict, bundle_dir: Path, tmp_path: Path):
    silent = SilentServer()
    try:
        slow = f"http://user:secret@127.0.0.1:{silent.port}/v1"
        judge = ["--judge-backend", "openai", "--judge-model", "m", "--judge-timeout-s", "0.5"]
        with running_server(tmp_path, "--bundles", f"rm={bundle_dir}", *judge, "--judge-base-url", slow) as timing:
            for server, status in ((strict, 502), (timing, 504)):
                item = {"items": [{"prompt": "a", "response": "b"}], "rationale": False}
                answer = httpx.post(server.url + "/v1/judge", json=item, headers={"x-request-id": f"judge-{status}"})
                assert answer.status_code == status
                assert answer.json()["error"]["request_id"] == f"judge-{status}"
                assert "secret" not in answer.text and "127.0.0.1" not in answer.text
                with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as raised:
                    one = pb.JudgeItem(prompt=pb.Prompt(text="a"), response="b")
                    reward_pb2_grpc.RewardServiceStub(channel).Judge(pb.JudgeRequest(items=[one]), timeout=60)
                said = raised.value.details() + str(raised.value.trailing_metadata())
                assert "secret" not in said and "127.0.0.1" not in said
                logged = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
                failures = [line for line in logged if line["msg"] == "judge backend failed"]
                assert any(f["request_id"] == f"judge-{status}" and "127.0.0.1" in f["reason"] for f in failures)
    finally:
        silent.close()


def grpc_health(server: RunningServer) -> int:
    with grpc.insecure_channel(server.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def settled(url: str, seconds: float) -> httpx.Response:
    """/readyz once no component is loading any more (or when `seconds` are up)."""
    deadline = time.monotonic() + seconds
    while "loading" in (ready := httpx.get(url + "/readyz")).text and time.monotonic() < deadline:
        time.sleep(0.1)
    return ready


def test_a_bad_key_file_names_api_keys_and_a_fixed_one_makes_both_faces_ready(bundle_dir: Path, tmp_path: Path):
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys: [ {name: broken")
    flags = ["--bundles", f"rm={bundle_dir}", "--auth", "on", "--api-keys-file", str(keys), "--judge-backend", "off"]
    with running_server(tmp_path, *flags, wait_ready=False) as server:
        ready = settled(server.url, 60)
        error = ready.json()["error"]
        assert ready.status_code == 503 and error["message"] == "api_keys failed"
        assert set(error["details"]) == {"api_keys"} and "keys.yaml" in error["details"]["api_keys"]
        assert grpc_health(server) == health_pb2.HealthCheckResponse.NOT_SERVING

        scorer = key_file(keys, scorer=["score"])["scorer"]
        server.process.send_signal(signal.SIGHUP)  # the admin route needs a key, and none could be read
        deadline = time.monotonic() + 30
        while (ready := httpx.get(server.url + "/readyz")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.1)
        assert ready.json()["components"]["api_keys"] == {"state": "ready"}
        deadline = time.monotonic() + 10
        while grpc_health(server) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the gRPC health service did not follow the reload"
            time.sleep(0.1)
        assert httpx.post(server.url + "/v1/score", json=ONE, headers=bearer(scorer)).status_code == 200


def broken_graph() -> bytes:
    """A well-formed reward-model graph (the right inputs and output) that fails when run: the reshape cannot fit."""
    ids, mask = (
        helper.make_tensor_value_info(n, TensorProto.INT64, ["n", "length"]) for n in ("input_ids", "attention_mask")
    )
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input_ids", "shape"], ["reshaped"]),
            helper.make_node("Cast", ["reshaped"], ["score"], to=TensorProto.FLOAT),
        ],
        "broken",
        [ids, mask],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [3, 1_000_003])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(
    ("model", "reason"),
    [(b"garbage, not a protobuf", "not a usable ONNX model"), (broken_graph(), "Reshape")],
    ids=["garbage", "graph_fails_when_run"],
)
def test_a_corrupt_model_with_valid_checksums_fails_readiness_with_the_reason(
    model, reason, bundle_dir: Path, tmp_path: Path
):
    # Both fail as one bundle that did not load (the warm-up run is part of opening it), not as loading that stopped.
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    (bundle / "model.onnx").write_bytes(model)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = {"sha256": sha256_file(bundle / "model.onnx"), "bytes": len(model)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with running_server(tmp_path, "--bundles", f"rm={bundle}", "--judge-backend", "off", wait_ready=False) as server:
        ready = settled(server.url, 20)
        error = ready.json()["error"]
        assert ready.status_code == 503 and error["message"] == "models failed", ready.text
        assert reason in error["details"]["models"]
        assert grpc_health(server) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert httpx.post(server.url + "/v1/score", json=ONE).json()["error"]["code"] == "not_ready"
        log = server.logs()
        assert "bundle not loaded" in log and reason in log and "loading stopped" not in log
