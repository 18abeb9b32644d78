"""One table of operations (clients/operations.py), deny by default: every route and RPC the server exposes is
declared with a scope and limits, undeclared ones are refused with auth on, and a judge needs the judge scope
wherever it is reached from. In process through httpx.ASGITransport where the table itself is the subject, on real
servers (HTTP and gRPC) for the behaviour."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from starlette.routing import Mount

from arbiter.clients import operations as ops
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from arbiter.service.access.limits import RateLimiter
from arbiter.service.http.app import create_app
from arbiter.service.runtime.runtime import Runtime
from arbiter.service.settings import ServerSettings
from tests.server import running_server
from tests.test_access import bearer, key_file

ITEM = {"items": [{"prompt": "hi", "response": "hello"}]}
SPEC_WITH_JUDGE = """name: judged
version: "1"
description: a reward model and a judge principle
components:
  - {name: rm, kind: model, model: rm}
  - {name: harmless, kind: judge, constitution: default, principles: [harmless]}
reward:
  - {component: rm, weight: 1.0}
  - {component: harmless, weight: 1.0}
"""


def _app(**settings: object):
    runtime = Runtime(ServerSettings(bundles=[], annotation_db=None, judge_backend="off", **settings))
    return create_app(runtime.settings, runtime)


def _routes(routes: list) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, in included routers too; a mount serves GET below its path."""
    for route in routes:
        if isinstance(route, Mount):
            yield "GET", route.path + "/{file:path}"
        elif hasattr(route, "original_router"):  # FastAPI's included router
            yield from _routes(route.original_router.routes)
        else:
            yield from ((m, route.path) for m in route.methods if m != "HEAD")


def test_every_route_and_rpc_is_declared_with_a_scope_and_limits():
    app = _app()
    exposed = set(_routes(app.routes))
    for path, methods in app.openapi()["paths"].items():
        exposed |= {(method.upper(), path) for method in methods}
    declared = {(op.method, op.path) for op in ops.OPERATIONS if op.path}
    assert exposed - declared == set(), "routes without a declared operation"
    assert declared - exposed == set(), "declared operations the server does not serve"
    rpcs = {f"/{s.full_name}/{m.name}" for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods}
    rpcs |= {f"/{s.full_name}/{m.name}" for s in health_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}
    rpcs |= {f"/{s.full_name}/{m.name}" for s in reflection_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert rpcs - {op.rpc for op in ops.OPERATIONS} == set(), "RPCs without a declared operation"
    for op in ops.OPERATIONS:
        assert op.scope in (*ops.SCOPES, "open"), op
        assert op.limits <= set(ops.LIMITS), op
        if op.scope != "open":
            assert "rate" in op.limits, f"{op.name}: every keyed operation is rate limited"
        if op.method in ("POST", "PATCH"):
            assert "body" in op.limits, f"{op.name}: a body without a size limit"


def test_an_undeclared_route_is_refused_with_auth_on(tmp_path: Path):
    keys = key_file(tmp_path / "keys.yaml", admin=["score", "judge", "annotate", "admin"])
    app = _app(auth="on", api_keys_file=str(tmp_path / "keys.yaml"))

    @app.get("/v1/forgotten")
    async def forgotten() -> dict[str, str]:  # a route added without its entry in the table
        return {"secret": "reached"}

    async def call() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            forgotten_ = await http.get("/v1/forgotten", headers=bearer(keys["admin"]))
            declared = await http.get("/v1/models", headers=bearer(keys["admin"]))
            return forgotten_, declared

    refused, declared = asyncio.run(call())
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "reached" not in refused.text
    assert declared.status_code != 403  # a declared route with a key that has the scope goes on (503: no models)


def test_idle_rate_limit_windows_are_evicted():
    async def run() -> tuple[int, int]:
        limiter = RateLimiter()
        for n in range(50):
            await limiter.take(f"client:10.0.0.{n}", rps=10, capacity=5)
        held = len(limiter.storage.events)  # type: ignore[attr-defined]
        await asyncio.sleep(1.6)  # past the 1 s window
        await limiter.take("client:10.0.1.1", rps=10, capacity=5)  # the next caller's visit sweeps expired windows
        await asyncio.sleep(0.2)
        return held, len(limiter.storage.events)  # type: ignore[attr-defined]

    held, later = asyncio.run(run())
    assert held == 50 and later == 1


@pytest.fixture(scope="module")
def keyed(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("operations")
    keys = key_file(
        tmp / "keys.yaml",
        scorer=(["score"], {"rps": 1000, "burst": 1000}),
        judger=(["score", "judge"], {"rps": 1000, "burst": 1000}),
        streamer=(["score"], {"rps": 1, "burst": 1}),
    )
    (tmp / "judged.yaml").write_text(SPEC_WITH_JUDGE)
    flags = ["--bundles", f"rm={bundle_dir}", "--auth", "on", "--api-keys-file", str(tmp / "keys.yaml")]
    flags += ["--judge-backend", "off", "--reward-specs", str(tmp / "judged.yaml")]
    flags += ["--rate-limit-rps", "0.01", "--rate-limit-burst", "3"]  # for callers without a (known) key
    with running_server(tmp, *flags) as server:
        yield server, keys


def test_the_judge_needs_the_judge_scope_wherever_it_is_reached_from(keyed):
    server, keys = keyed
    judge_item = {"model": "judge", **ITEM}
    reached = [
        ("/v1/score", judge_item),
        ("/v1/score", {"model": "judge:default", **ITEM}),
        ("/v1/rank", {"model": "judge", "prompt": "hi", "responses": ["a", "b"]}),
        ("/v1/compare", {"model": "judge", "prompt": "hi", "response_a": "a", "response_b": "b"}),
        ("/v1/reward", {"spec": "judged", **ITEM}),
    ]
    for path, body in reached:
        refused = httpx.post(server.url + path, json=body, headers=bearer(keys["scorer"]))
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["details"]["scope"] == "judge"
        allowed = httpx.post(server.url + path, json=body, headers=bearer(keys["judger"]))
        assert allowed.status_code == 503 and allowed.json()["error"]["code"] == "judge_off", (path, allowed.text)
    assert httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(keys["scorer"])).status_code == 200
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        request = pb.ScoreRequest(model="judge", items=[pb.ScoreItem(prompt=pb.Prompt(text="hi"), response="yo")])
        for key, status in (
            (keys["scorer"], grpc.StatusCode.PERMISSION_DENIED),
            (keys["judger"], grpc.StatusCode.UNAVAILABLE),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Score(request, metadata=(("authorization", f"Bearer {key}"),))
            assert raised.value.code() == status
        reward = pb.RewardRequest(spec="judged", items=[pb.RewardItem(prompt=pb.Prompt(text="hi"), response="yo")])
        with pytest.raises(grpc.RpcError) as raised:
            stub.Reward(reward, metadata=(("authorization", f"Bearer {keys['scorer']}"),))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_undeclared_rpc_is_refused_with_auth_on(keyed):
    server, keys = keyed
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary("/arbiter.v1.RewardService/Undeclared")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"", metadata=(("authorization", f"Bearer {keys['scorer']}"),))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED  # not UNIMPLEMENTED: refused before routing
        body = json.loads(dict(raised.value.trailing_metadata())["arbiter-error"])
        assert "not a declared operation" in body["error"]["message"]
    assert httpx.get(server.url + "/v1/undeclared", headers=bearer(keys["scorer"])).status_code == 403


def test_a_stream_takes_a_rate_limit_token_per_message(keyed):
    server, keys = keyed
    messages = [
        pb.ScoreStreamRequest(
            id=str(n), request=pb.ScoreRequest(items=[pb.ScoreItem(prompt=pb.Prompt(text="hi"), response=f"r{n}")])
        )
        for n in range(20)
    ]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        answers = list(stub.ScoreStream(iter(messages), metadata=(("authorization", f"Bearer {keys['streamer']}"),)))
    assert len(answers) == 20
    limited = [a for a in answers if a.HasField("error")]
    assert {a.error.code for a in limited} == {"rate_limited"}
    assert 1 <= 20 - len(limited) <= 3  # one per second at 1 rps: the stream took well under 3 s


def test_unknown_keys_share_their_address_bucket(keyed):
    server, _ = keyed
    statuses = [httpx.get(server.url + "/v1/models", headers=bearer(f"made-up-{n}")).status_code for n in range(4)]
    assert statuses[:3] == [401, 401, 401] and statuses[3] == 429
    annotation = httpx.get(server.url + "/v1/annotation/me", headers=bearer("another-made-up-key"))
    assert annotation.status_code == 429  # the same address: no store lookup per invented annotator key


def test_grpc_callers_are_limited_by_address_not_by_connection(bundle_dir: Path, tmp_path: Path):
    flags = ["--bundles", f"rm={bundle_dir}", "--judge-backend", "off", "--rate-limit-rps", "0.01"]
    with running_server(tmp_path, *flags, "--rate-limit-burst", "2") as server:
        codes = []
        for _ in range(3):  # a new channel, so a new client port, per call
            with grpc.insecure_channel(server.grpc_target) as channel:
                try:
                    reward_pb2_grpc.RewardServiceStub(channel).ListModels(pb.ListModelsRequest())
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(error.code())
        assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_a_loopback_server_is_not_driven_by_other_pages(bundle_dir: Path, tmp_path: Path):
    flags = ["--bundles", f"rm={bundle_dir}", "--judge-backend", "off", "--grpc-port", "0"]
    with running_server(tmp_path, *flags) as server:
        port = server.url.rsplit(":", 1)[1]
        rebound = httpx.post(server.url + "/v1/score", json=ITEM, headers={"Host": "rebind.attacker.example"})
        assert rebound.status_code == 400 and "rebind.attacker.example" in rebound.json()["error"]["message"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            assert httpx.post(server.url + "/v1/score", json=ITEM, headers={"Host": host}).status_code == 200
        form = {"content-type": "text/plain", "origin": "https://evil.example"}
        assert httpx.post(server.url + "/v1/admin/reload", content=b"{}", headers=form).status_code == 415
        assert httpx.post(server.url + "/v1/score", content=json.dumps(ITEM), headers=form).status_code == 415
        beacon = httpx.post(server.url + "/v1/annotation/next", headers={"origin": "https://evil.example"})
        assert beacon.status_code == 415  # no body, but a browser's request: refused all the same
        keyless = httpx.post(server.url + "/v1/admin/reload", json={})
        assert keyless.status_code == 401 and "admin" in keyless.json()["error"]["message"]
        load = httpx.post(server.url + "/v1/admin/models", json={"bundle": "/etc", "name": "x"})
        assert load.status_code == 401
        assert httpx.post(server.url + "/v1/score", json=ITEM).status_code == 200  # and it goes on serving
