"""Access control on a real server: API keys with scopes over HTTP and gRPC, reloading the key list, rate limits in
memory and shared through this machine's Redis, CORS, and secrets kept out of the log."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
import yaml

from arbiter.clients import RewardClient, RewardServerError
from arbiter.clients.v1 import reward_pb2, reward_pb2_grpc
from arbiter.service.access.control import AccessControl, AccessPolicy
from arbiter.service.access.keys import digest
from arbiter.service.settings import ServerSettings
from tests.server import free_port, running_server

ITEM = {"items": [{"prompt": "hi", "response": "hello"}]}
REDIS = os.environ.get("ARBITER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def key_file(path: Path, **grants: list[str] | tuple[list[str], dict]) -> dict[str, str]:
    """Writes a key list granting each name its scopes (and rate limit); returns the plaintext keys by name."""
    keys, entries = {}, []
    for name, grant in grants.items():
        scopes, limit = grant if isinstance(grant, tuple) else (grant, None)
        keys[name] = f"ark_test_{name}_{uuid.uuid4().hex}"
        entry = {"name": name, "sha256": digest(keys[name]), "scopes": scopes}
        if limit:
            entry["rate_limit"] = limit
        entries.append(entry)
    path.write_text(yaml.safe_dump({"keys": entries}))
    return keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_auth_is_off_by_default_only_on_loopback():
    def enabled(**settings: object) -> bool:
        return AccessControl(ServerSettings(**settings).part(AccessPolicy)).enabled

    assert not enabled(host="127.0.0.1")
    assert enabled(host="0.0.0.0")
    assert enabled(host="127.0.0.1", auth="on")
    assert not enabled(host="0.0.0.0", auth="off")


def test_keys_and_scopes_over_http_and_grpc(bundle_dir: Path, tmp_path: Path, monkeypatch):
    keys = key_file(
        tmp_path / "keys.yaml", scorer=["score"], judge=["judge"], admin=["admin"], trainer=["score", "annotate"]
    )
    flags = ["--bundles", f"rm={bundle_dir}", "--auth", "on", "--api-keys-file", str(tmp_path / "keys.yaml")]
    with running_server(tmp_path, *flags, "--judge-backend", "off") as server:
        url = server.url
        for open_path in ("/healthz", "/readyz", "/metrics", "/annotate", "/openapi.json"):
            assert httpx.get(url + open_path).status_code == 200, open_path

        anonymous = httpx.post(url + "/v1/score", json=ITEM)
        assert code(anonymous) == (401, "unauthorized") and anonymous.headers["www-authenticate"] == "Bearer"
        assert code(httpx.post(url + "/v1/score", json=ITEM, headers=bearer("ark_nope"))) == (401, "unauthorized")
        assert code(httpx.post(url + "/v1/score", json=ITEM, headers=bearer(keys["judge"]))) == (403, "forbidden")
        assert httpx.post(url + "/v1/score", json=ITEM, headers=bearer(keys["scorer"])).status_code == 200
        # judge scope passes the check (the judge is off on this server: 503 from the route itself)
        judged = httpx.post(url + "/v1/judge", json={"items": []}, headers=bearer(keys["judge"]))
        assert judged.status_code in (422, 503)
        assert code(httpx.post(url + "/v1/admin/reload", headers=bearer(keys["scorer"]))) == (403, "forbidden")
        assert httpx.post(url + "/v1/admin/reload", headers=bearer(keys["admin"])).status_code == 200

        # The client sends its key over both transports, from the argument or from ARBITER_API_KEY.
        with RewardClient(url, api_key=keys["scorer"], retry=None) as client:
            assert len(client.score("hi", ["a", "b"]).scores) == 2
        with RewardClient(server.grpc_url, api_key=keys["scorer"]) as client:
            assert len(client.score("hi", ["a", "b"]).scores) == 2
        monkeypatch.setenv("ARBITER_API_KEY", keys["scorer"])
        with RewardClient(server.grpc_url) as client:
            assert client.models()[0].name == "rm"
        monkeypatch.setenv("ARBITER_API_KEY", keys["judge"])
        with RewardClient(server.grpc_url) as client, pytest.raises(RewardServerError) as refused:
            client.score("hi", ["a"])
        assert (refused.value.status, refused.value.code, refused.value.retryable) == (403, "forbidden", False)
        monkeypatch.delenv("ARBITER_API_KEY")

        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            request = reward_pb2.ScoreRequest(
                items=[reward_pb2.ScoreItem(prompt=reward_pb2.Prompt(text="hi"), response="x")]
            )
            with pytest.raises(grpc.RpcError) as unauthenticated:
                stub.Score(request)
            assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as denied:
                stub.Score(request, metadata=[("authorization", f"Bearer {keys['judge']}")])
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            stream = stub.ScoreStream(iter([reward_pb2.ScoreStreamRequest(id="1", request=request)]))
            with pytest.raises(grpc.RpcError) as stream_refused:
                list(stream)
            assert stream_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # An API key with the annotate scope acts as a lead in the preference store (a trainer's uploads).
        upload = {"tasks": [{"prompt": "p", "responses": ["a", "b"]}]}
        created = httpx.post(url + "/v1/annotation/tasks", json=upload, headers=bearer(keys["trainer"]))
        assert created.status_code == 201, created.text
        lead_only = httpx.post(url + "/v1/annotation/tasks", json=upload, headers=bearer(keys["scorer"]))
        assert code(lead_only) == (403, "forbidden")
        audit = httpx.get(url + "/v1/annotation/audit", headers=bearer(keys["trainer"])).json()["events"]
        assert any(e["actor"] == "key:trainer" and e["action"] == "tasks.create" for e in audit)
        # ... and annotators' own keys still work there.
        made = httpx.post(url + "/v1/annotation/annotators", json={"name": "ann"}, headers=bearer(keys["trainer"]))
        assert httpx.get(url + "/v1/annotation/me", headers=bearer(made.json()["key"])).status_code == 200
        assert code(httpx.get(url + "/v1/annotation/me")) == (401, "unauthorized")


def test_the_key_list_reloads_and_a_bad_one_changes_nothing(bundle_dir: Path, tmp_path: Path):
    path = tmp_path / "keys.yaml"
    first = key_file(path, scorer=["score"], admin=["admin"])
    flags = ["--bundles", f"rm={bundle_dir}", "--auth", "on", "--api-keys-file", str(path), "--grpc-port", "0"]
    with running_server(tmp_path, *flags, "--judge-backend", "off") as server:
        listed = yaml.safe_load(path.read_text())
        added = key_file(tmp_path / "more.yaml", newcomer=["score"])
        listed["keys"] += yaml.safe_load((tmp_path / "more.yaml").read_text())["keys"]
        path.write_text(yaml.safe_dump(listed))
        assert httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(added["newcomer"])).status_code == 401
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(added["newcomer"])).status_code != 200:
            assert time.monotonic() < deadline, "SIGHUP did not reload the keys"
            time.sleep(0.1)

        path.write_text("keys: [ {name: broken")
        refused = httpx.post(server.url + "/v1/admin/reload", headers=bearer(first["admin"]))
        assert code(refused) == (400, "invalid_input")
        for key in (first["scorer"], added["newcomer"]):
            assert httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(key)).status_code == 200

    with running_server(tmp_path, *flags, "--judge-backend", "off", wait_ready=False) as broken:
        ready = httpx.get(broken.url + "/readyz")
        deadline = time.monotonic() + 30
        while "api_keys" not in str(ready.json()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            ready = httpx.get(broken.url + "/readyz")
        assert ready.status_code == 503 and "api_keys" in ready.json()["error"]["details"]
        assert httpx.post(broken.url + "/v1/score", json=ITEM, headers=bearer(first["scorer"])).status_code == 401


def test_rate_limits_in_memory(bundle_dir: Path, tmp_path: Path):
    keys = key_file(tmp_path / "keys.yaml", steady=["score"], fast=(["score"], {"rps": 1000, "burst": 1000}))
    flags = ["--bundles", f"rm={bundle_dir}", "--auth", "on", "--api-keys-file", str(tmp_path / "keys.yaml")]
    limits = ["--rate-limit-rps", "1.5", "--rate-limit-burst", "3", "--grpc-port", "0", "--judge-backend", "off"]
    with running_server(tmp_path, *flags, *limits) as server:
        answers = [httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(keys["steady"])) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert code(answers[3]) == (429, "rate_limited") and int(answers[3].headers["retry-after"]) >= 1
        fast = [httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(keys["fast"])) for _ in range(6)]
        assert {a.status_code for a in fast} == {200}  # its own limit, and its own bucket
        time.sleep(2.1)  # 3 requests per 2 s window (burst / rps): the window has moved on
        assert httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(keys["steady"])).status_code == 200
        with RewardClient(server.url, api_key=keys["steady"]) as client:  # the client waits and retries on 429
            assert all(len(client.score("hi", ["x"]).scores) == 1 for _ in range(4))


def test_rate_limits_shared_by_replicas_through_redis(bundle_dir: Path, tmp_path: Path):
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS}: {exc}")
    name = f"shared-{uuid.uuid4().hex[:8]}"  # a bucket of its own in a Redis other runs share
    keys = key_file(tmp_path / "keys.yaml", **{name: (["score"], {"rps": 0.01, "burst": 4})})
    flags = ["--bundles", f"rm={bundle_dir}", "--auth", "on", "--api-keys-file", str(tmp_path / "keys.yaml")]
    common = [*flags, "--redis-url", REDIS, "--grpc-port", "0", "--judge-backend", "off"]
    with running_server(tmp_path, *common) as one, running_server(tmp_path, *common) as two:
        statuses = [
            httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(keys[name])).status_code
            for server in (one, two, one, two, one, two)
        ]
        assert statuses == [200, 200, 200, 200, 429, 429]  # four tokens in all, not four each
    down = f"redis://127.0.0.1:{free_port()}/0"
    with running_server(tmp_path, *flags, "--redis-url", down, "--grpc-port", "0", "--judge-backend", "off") as lone:
        response = httpx.post(lone.url + "/v1/score", json=ITEM, headers=bearer(keys[name]))
        assert response.status_code == 200  # Redis unreachable: let through, and said in the log
        assert "redis unavailable" in lone.logs()


def test_cors_and_secrets_kept_out_of_the_log(bundle_dir: Path, tmp_path: Path):
    keys = key_file(tmp_path / "keys.yaml", scorer=["score"])
    secret_keys = key_file(tmp_path / "secret.yaml", from_env=["score"])
    db_password = f"pw-{uuid.uuid4().hex}"
    env_secret = (tmp_path / "secret.yaml").read_text()
    flags = ["--bundles", f"rm={bundle_dir}", "--auth", "on", "--api-keys-file", str(tmp_path / "keys.yaml")]
    flags += ["--cors-origins", "https://labelers.example", "--grpc-port", "0", "--judge-backend", "off"]
    flags += ["--redis-url", f"redis://:{db_password}@127.0.0.1:{free_port()}/0"]
    os.environ["ARBITER_API_KEYS"] = env_secret
    try:
        with running_server(tmp_path, *flags) as server:
            origin = {"Origin": "https://labelers.example"}
            preflight = httpx.options(
                server.url + "/v1/score",
                headers={
                    **origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://labelers.example"
            refused = httpx.post(server.url + "/v1/score", json=ITEM, headers=origin)
            assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin["Origin"]
            stranger = httpx.post(server.url + "/v1/score", json=ITEM, headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in stranger.headers
            for key in (keys["scorer"], secret_keys["from_env"]):
                assert (
                    httpx.post(server.url + "/v1/score", json=ITEM, headers={**origin, **bearer(key)}).status_code
                    == 200
                )
            httpx.post(server.url + "/v1/score", json=ITEM, headers=bearer(keys["scorer"] + "x"))
            log = server.logs()
    finally:
        del os.environ["ARBITER_API_KEYS"]
    assert '"api_keys": "**********"' in log
    for secret in (keys["scorer"], secret_keys["from_env"], db_password):
        assert secret not in log
