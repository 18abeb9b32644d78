"""Faults, each with the server still up and answering what it can. Covered here: a missing or corrupt bundle at
start, and the preference store's database down (at start, and gone while serving). Covered beside the features
they concern: an invalid bundle manifest (test_server_http::test_bad_bundle_keeps_the_server_alive_but_not_ready),
the judge backend down or slow (test_server_judge::test_judge_backend_down_or_slow_is_502_504_and_reward_models_
keep_serving), a full queue (test_server_http::test_queue_full_is_429_with_retry_after), an unreadable key list
(test_access::test_the_key_list_reloads_and_a_bad_one_changes_nothing)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.databases import POSTGRES, fresh_database
from tests.server import free_port, running_server

ITEM = {"items": [{"prompt": "hi", "response": "hello"}]}


TRACED = {"X-Request-ID": "store-down-1"}


def assert_told_nothing_of_the_driver(answer: httpx.Response, log: str, event: str) -> None:
    """The caller gets a short message and the request id; the driver's words (hosts, ports, users) are logged."""
    error = answer.json()["error"]
    assert error["request_id"] == TRACED["X-Request-ID"] and "details" not in error
    assert "127.0.0.1" not in answer.text and "psycopg" not in answer.text.lower()
    logged = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e["msg"] == event and e.get("request_id") == TRACED["X-Request-ID"] and e["reason"] for e in logged)


def wait_not_ready(url: str, reason: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        ready = httpx.get(url + "/readyz")
        if reason in ready.text or time.monotonic() > deadline:
            return ready
        time.sleep(0.2)


@pytest.mark.parametrize("damage", ["missing", "corrupt_onnx"])
def test_a_missing_or_corrupt_bundle_leaves_the_server_up_but_not_ready(damage, bundle_dir: Path, tmp_path: Path):
    bundle = tmp_path / "bundle"
    if damage == "corrupt_onnx":
        shutil.copytree(bundle_dir, bundle)
        model = bundle / "model.onnx"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    flags = ["--bundles", f"rm={bundle}", "--grpc-port", "0", "--judge-backend", "off"]
    with running_server(tmp_path, *flags, wait_ready=False) as server:
        ready = wait_not_ready(server.url, "failed")
        assert ready.status_code == 503 and ready.json()["error"]["details"]["models"].startswith("rm: ")
        assert httpx.get(server.url + "/healthz").status_code == 200
        assert httpx.post(server.url + "/v1/score", json=ITEM).json()["error"]["code"] == "not_ready"
        log = server.logs()
        assert "bundle not loaded" in log and str(bundle) in log


def test_the_database_down_fails_annotation_routes_only(bundle_dir: Path, tmp_path: Path):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    flags = ["--bundles", f"rm={bundle_dir}", "--grpc-port", "0", "--judge-backend", "off"]
    with running_server(tmp_path, *flags, "--annotation-db", closed) as server:  # ready: scoring does not need it
        down = httpx.get(server.url + "/v1/annotation/me", headers={"Authorization": "Bearer arb_x", **TRACED})
        assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
        assert_told_nothing_of_the_driver(down, server.logs(), "preference store not opened")
        assert httpx.post(server.url + "/v1/score", json=ITEM).status_code == 200
        ready = httpx.get(server.url + "/readyz").json()
        assert ready["components"]["store"]["state"] == "failed"

    with fresh_database("postgresql", tmp_path) as db:
        from arbiter.annotation.store import AnnotationStore

        lead = AnnotationStore.open(db).add_annotator("lead", "lead").key
        with running_server(tmp_path, *flags, "--annotation-db", db) as server:
            me = {"Authorization": f"Bearer {lead}"}
            assert httpx.get(server.url + "/v1/annotation/me", headers=me).status_code == 200
            with psycopg.connect(POSTGRES, autocommit=True) as admin:  # the database goes away while serving
                admin.execute(f'DROP DATABASE "{db.rsplit("/", 1)[1]}" WITH (FORCE)')
            gone = httpx.get(server.url + "/v1/annotation/me", headers={**me, **TRACED})
            assert gone.status_code == 503 and gone.json()["error"]["code"] == "store_unavailable"
            assert_told_nothing_of_the_driver(gone, server.logs(), "preference store unavailable")
            assert httpx.post(server.url + "/v1/score", json=ITEM).status_code == 200
            assert httpx.get(server.url + "/readyz").status_code == 200
