"""The annotation API of a real `arbiter serve`, on SQLite and on this machine's PostgreSQL: the whole flow, every
client mistake answered with a 4xx, a server killed mid-session, and the loop from annotations to a served bundle."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from arbiter.clients import AnnotationClient, RewardServerError
from tests.databases import fresh_database
from tests.server import RunningServer, add_annotator, running_server


@dataclass
class Annotating:
    server: RunningServer
    db: str
    lead: str  # the lead's key

    def call(self, method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {key}"} if key else {})}
        return httpx.request(method, self.server.url + path, headers=headers, timeout=60, **kw)

    def annotator(self, name: str, role: str = "annotator") -> str:
        r = self.call("POST", "/v1/annotation/annotators", self.lead, json={"name": name, "role": role})
        assert r.status_code == 201, r.text
        return r.json()["key"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def annotating(request, bundle_dir: Path, tmp_path_factory) -> Iterator[Annotating]:
    folder = tmp_path_factory.mktemp(f"annotation-{request.param}")
    with fresh_database(request.param, folder) as db:
        lead = add_annotator(db, "lead", "lead")  # the first lead comes from the command line
        flags = ["--bundles", f"rm={bundle_dir}", "--annotation-db", db, "--judge-backend", "off"]
        with running_server(folder, *flags) as server:
            yield Annotating(server, db, lead)


def tasks(n: int, prefix: str, annotators: int = 1) -> dict:
    return {
        "tasks": [
            {
                "prompt": [{"role": "user", "content": f"{prefix} question {i}?"}],
                "responses": [
                    {"text": f"A careful answer {i}.", "policy": "sft", "policy_version": "step-100"},
                    {"text": f"whatever {i}", "policy": "sft", "policy_version": "step-100", "sampling": {"t": 1}},
                ],
                "annotators": annotators,
            }
            for i in range(n)
        ]
    }


def answer_careful(view: dict) -> dict:
    """Prefers the careful answer wherever it was shown."""
    careful = next(r["label"] for r in view["responses"] if r["text"].startswith("A careful"))
    return {"choice": careful, "strength": "better", "rationale": "more careful"}


def test_the_whole_flow_over_http(annotating: Annotating):
    a = annotating
    ann = a.annotator("flow-annotator")
    upload = tasks(3, "flow")
    first = a.call("POST", "/v1/annotation/tasks", a.lead, json=upload, headers={"Idempotency-Key": "flow-1"})
    again = a.call("POST", "/v1/annotation/tasks", a.lead, json=upload, headers={"Idempotency-Key": "flow-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == {**first.json(), "replayed": True}
    ids = first.json()["task_ids"]

    submitted = []
    while (r := a.call("POST", "/v1/annotation/next", ann)).status_code == 200:
        view = r.json()
        assert view["task_id"] in ids  # this annotator is new, and this test runs first on its server
        assert "<p>" in view["prompt_html"] and all(x["html"] for x in view["responses"])
        body = answer_careful(view)
        saved = a.call("POST", f"/v1/annotation/tasks/{view['task_id']}/annotations", ann, json=body)
        assert saved.status_code == 201, saved.text
        replay = a.call("POST", f"/v1/annotation/tasks/{view['task_id']}/annotations", ann, json=body)
        assert replay.status_code == 200 and replay.json()["id"] == saved.json()["id"]
        submitted.append(view["task_id"])
    assert r.status_code == 204 and sorted(submitted) == ids

    me = a.call("GET", "/v1/annotation/me", ann).json()
    assert (me["submitted"], me["available"], me["role"]) == (3, 0, "annotator")
    export = a.call("GET", "/v1/annotation/export", a.lead, params={"policy_version": "step-100"})
    assert export.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert len(rows) == 3 and all(r["chosen"].startswith("A careful") and r["margin"] == 0.6667 for r in rows)
    assert a.call("GET", "/v1/annotation/export", a.lead, params={"policy_version": "nope"}).text == ""

    stats = a.call("GET", "/v1/annotation/stats", a.lead).json()
    assert stats["tasks"]["complete"] >= 3 and stats["annotations"] >= 3
    assert stats["reward_model"]["model"] == "rm" and stats["reward_model"]["comparisons"] >= 3
    assert 0 <= stats["reward_model"]["agreement"] <= 1
    actions = [e["action"] for e in a.call("GET", "/v1/annotation/audit", a.lead).json()["events"]]
    assert {"tasks.create", "assignment.create", "annotation.submit", "annotations.export"} <= set(actions)


def test_client_mistakes_are_4xx_and_the_server_goes_on(annotating: Annotating):
    a = annotating
    ann = a.annotator("careless")
    ranking = {"tasks": [{"prompt": "rank these", "responses": ["x", "y", "z"]}]}
    task_id = a.call("POST", "/v1/annotation/tasks", a.lead, json=ranking).json()["task_ids"][0]

    def code(r: httpx.Response) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["code"]

    assert code(a.call("GET", "/v1/annotation/me")) == (401, "unauthorized")
    assert code(a.call("GET", "/v1/annotation/me", "arb_wrong")) == (401, "unauthorized")
    assert code(a.call("POST", "/v1/annotation/tasks", ann, json=ranking)) == (403, "forbidden")
    assert code(a.call("GET", "/v1/annotation/export", ann)) == (403, "forbidden")
    one_response = {"tasks": [{"prompt": "p", "responses": ["only"]}]}
    assert code(a.call("POST", "/v1/annotation/tasks", a.lead, json=one_response)) == (422, "invalid_request")
    as_json = {"content-type": "application/json"}
    broken = a.call("POST", "/v1/annotation/tasks", a.lead, content=b"{not json", headers=as_json)
    assert code(broken) == (422, "invalid_request")
    not_json = a.call("POST", "/v1/annotation/tasks", a.lead, content=b"{not json")  # no content type at all
    assert code(not_json) == (415, "unsupported_media_type")
    assert code(a.call("POST", "/v1/annotation/annotators", a.lead, json={"name": "careless"})) == (
        409,
        "annotator_exists",
    )
    assert code(a.call("POST", f"/v1/annotation/tasks/{task_id}/annotations", ann, json={"choice": "A"})) == (
        422,
        "invalid_request",
    )  # A without a strength
    assert code(a.call("POST", f"/v1/annotation/tasks/{task_id}/annotations", ann, json={"ranking": [1, 2, 3]})) == (
        409,
        "not_assigned",
    )
    assert code(a.call("POST", "/v1/annotation/tasks/999999/annotations", ann, json={"ranking": [1, 2]})) == (
        404,
        "not_found",
    )
    headers = {"Idempotency-Key": "mistakes"}
    assert a.call("POST", "/v1/annotation/tasks", a.lead, json=tasks(1, "k"), headers=headers).status_code == 201
    assert code(a.call("POST", "/v1/annotation/tasks", a.lead, json=tasks(2, "k"), headers=headers)) == (
        409,
        "idempotency_key_reused",
    )
    assert a.call("GET", "/v1/annotation/export", a.lead, params={"min_agreement": 3}).status_code == 422

    view = a.call("POST", "/v1/annotation/next", ann).json()
    assert view["task_id"] == task_id and view["kind"] == "ranking"
    wrong = a.call("POST", f"/v1/annotation/tasks/{task_id}/annotations", ann, json={"choice": "tie"})
    assert code(wrong) == (400, "invalid_input")
    good = a.call("POST", f"/v1/annotation/tasks/{task_id}/annotations", ann, json={"ranking": [3, 1, 2]})
    assert good.status_code == 201
    annotation_id = good.json()["id"]
    edit = a.call("PATCH", f"/v1/annotation/annotations/{annotation_id}", ann, json={"rationale": "second thoughts"})
    assert edit.status_code == 200 and edit.json()["rationale"] == "second thoughts"
    other = a.annotator("someone-else")
    assert code(a.call("PATCH", f"/v1/annotation/annotations/{annotation_id}", other, json={})) == (404, "not_found")
    # Nothing accepted was lost, and scoring never noticed.
    rows = a.call("GET", "/v1/annotation/export", a.lead).text
    assert "rank these" in rows
    score = a.call("POST", "/v1/score", json={"items": [{"prompt": "hi", "response": "hello"}]})
    assert score.status_code == 200


def test_concurrent_annotators_over_http(annotating: Annotating):
    a = annotating
    ids = a.call("POST", "/v1/annotation/tasks", a.lead, json=tasks(12, "busy", annotators=3)).json()["task_ids"]
    keys = [a.annotator(f"busy-{i}") for i in range(6)]

    def work(key: str) -> list[int]:
        done = []
        with httpx.Client(base_url=a.server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            while (r := http.post("/v1/annotation/next")).status_code == 200:
                view = r.json()
                if view["task_id"] not in ids:  # a task left by another test: not ours to count
                    http.post(f"/v1/annotation/tasks/{view['task_id']}/skip")
                    continue
                saved = http.post(f"/v1/annotation/tasks/{view['task_id']}/annotations", json=answer_careful(view))
                assert saved.status_code == 201, saved.text
                done.append(view["task_id"])
        return done

    with ThreadPoolExecutor(len(keys)) as pool:
        done = list(pool.map(work, keys))
    assert all(len(mine) == len(set(mine)) for mine in done)
    everything = sorted(t for mine in done for t in mine)
    assert everything == sorted(ids * 3)


def test_the_python_client(annotating: Annotating):
    a = annotating
    samples = tasks(5, "client")["tasks"]
    with AnnotationClient(a.server.url, a.lead, chunk_size=2) as lead:
        first = lead.create_tasks(samples, idempotency_key="client-upload")  # three chunks
        again = lead.create_tasks(samples, idempotency_key="client-upload")
        assert (first.created, first.replayed) == (5, False)
        assert again.task_ids == first.task_ids and (again.created, again.replayed) == (0, True)
        with AnnotationClient(a.server.url, a.annotator("pythonista")) as annotator:
            while (view := annotator.next_task()) is not None:
                if view.task_id not in first.task_ids:
                    annotator.skip(view.task_id)
                    continue
                careful = next(r.label for r in view.responses if r.text.startswith("A careful"))
                assert (
                    annotator.submit(view.task_id, {"choice": careful, "strength": "slightly_better"}).choice == careful
                )
            assert annotator.progress().submitted == 5
        ours = [r for r in lead.export(aggregate="each") if r["meta"]["task_id"] in first.task_ids]
        assert len(ours) == 5 and {r["margin"] for r in ours} == {0.3333}
        assert lead.stats().annotations >= 5
    with AnnotationClient(a.server.url, "arb_wrong") as stranger, pytest.raises(RewardServerError) as refused:
        stranger.progress()
    assert (refused.value.status, refused.value.code, refused.value.retryable) == (401, "unauthorized", False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def test_a_server_killed_mid_session_loses_nothing(db: str, bundle_dir: Path, tmp_path: Path):
    lead = add_annotator(db, "lead", "lead")
    flags = ["--bundles", f"rm={bundle_dir}", "--annotation-db", db, "--judge-backend", "off", "--grpc-port", "0"]
    with running_server(tmp_path, *flags) as server:
        a = Annotating(server, db, lead)
        ann = a.annotator("steady")
        a.call("POST", "/v1/annotation/tasks", lead, json=tasks(3, "restart"))
        first = a.call("POST", "/v1/annotation/next", ann).json()
        saved = a.call("POST", f"/v1/annotation/tasks/{first['task_id']}/annotations", ann, json=answer_careful(first))
        assert saved.status_code == 201
        shown = a.call("POST", "/v1/annotation/next", ann).json()  # on screen when the server dies
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    with running_server(tmp_path, *flags) as server:
        a = Annotating(server, db, lead)
        resumed = a.call("POST", "/v1/annotation/next", ann).json()
        assert resumed["task_id"] == shown["task_id"] and resumed["responses"] == shown["responses"]
        saved = a.call(
            "POST", f"/v1/annotation/tasks/{resumed['task_id']}/annotations", ann, json=answer_careful(resumed)
        )
        assert saved.status_code == 201
        rows = a.call("GET", "/v1/annotation/export", lead).text.splitlines()
        assert len(rows) == 2 and first["prompt"][0]["content"] in rows[0] + rows[1]
