"""The loop the README documents, with real human preference pairs: annotators compare responses on the server,
the annotations are exported as training data, a reward model is trained on them, and the running server starts
serving it without a restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.server import running_server

ROUNDS = 24


def arbiter(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "arbiter.cli", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_annotations_to_a_served_bundle(preferences: Path, bundle_dir: Path, tmp_path: Path):
    pairs = [json.loads(line) for line in (preferences / "hh_rlhf_harmless.jsonl").open()][:ROUNDS]
    human_choice = {p["chosen"] for p in pairs}
    db = f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    lead = arbiter("annotators", "add", "lead", "--role", "lead", "--db", db).strip()
    flags = ["--bundles", f"rm={bundle_dir}", "--annotation-db", db, "--judge-backend", "off", "--grpc-port", "0"]
    flags += ["--admin-open"]  # loopback and auth off: the admin route below is opened explicitly, as documented
    with running_server(tmp_path, *flags) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        as_lead = {"Authorization": f"Bearer {lead}"}
        annotator = http.post("/v1/annotation/annotators", headers=as_lead, json={"name": "ann"}).json()["key"]
        samples = [
            {
                "prompt": p["prompt"],
                "responses": [
                    {"text": p["chosen"], "policy": "sft", "policy_version": "round-1"},
                    {"text": p["rejected"], "policy": "sft", "policy_version": "round-1"},
                ],
            }
            for p in pairs
        ]
        upload = http.post(
            "/v1/annotation/tasks", headers={**as_lead, "Idempotency-Key": "r1"}, json={"tasks": samples}
        )
        assert upload.status_code == 201

        as_annotator = {"Authorization": f"Bearer {annotator}"}
        while (r := http.post("/v1/annotation/next", headers=as_annotator)).status_code == 200:
            view = r.json()
            label = next(x["label"] for x in view["responses"] if x["text"] in human_choice)
            answer = {"choice": label, "strength": "significantly_better"}
            saved = http.post(f"/v1/annotation/tasks/{view['task_id']}/annotations", headers=as_annotator, json=answer)
            assert saved.status_code == 201

        # 1. export (the CLI reads the database; the HTTP route gives the same rows)
        exported = tmp_path / "round-1.jsonl"
        arbiter("annotations", "export", "--db", db, "--policy-version", "round-1", "--out", str(exported))
        rows = [json.loads(line) for line in exported.read_text().splitlines()]
        assert len(rows) == ROUNDS and {r["chosen"] for r in rows} == human_choice
        over_http = http.get("/v1/annotation/export", headers=as_lead, params={"policy_version": "round-1"})
        assert [json.loads(line) for line in over_http.text.splitlines()] == rows

        # 2. train on them and write a bundle
        new_bundle = tmp_path / "bundles" / "rm-round-1"
        arbiter(
            "train", "--data", str(exported), "--max-steps", "3", "--batch-size", "8", "--max-length", "64",
            "--eval-fraction", "0.25", "--out", str(tmp_path / "runs" / "round-1"), "--export", str(new_bundle),
        )  # fmt: skip
        version = json.loads((new_bundle / "manifest.json").read_text())["model_version"]

        # 3. serve it in place of the old one, no restart
        before = http.get("/v1/models/rm").json()["version"]
        loaded = http.post("/v1/admin/models", json={"bundle": str(new_bundle), "name": "rm", "default": True})
        assert loaded.status_code == 200, loaded.text
        assert before != version and http.get("/v1/models/rm").json()["version"] == version
        scored = http.post("/v1/score", json={"items": [{"prompt": "hi", "response": "hello"}]}).json()
        assert scored["model_version"] == version
        stats = http.get("/v1/annotation/stats", headers=as_lead).json()
        assert stats["reward_model"]["model_version"] == version and stats["reward_model"]["comparisons"] == ROUNDS

        bad = http.post("/v1/admin/models", json={"bundle": str(tmp_path / "missing"), "name": "rm"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
        assert http.get("/v1/models/rm").json()["version"] == version  # a failed load keeps the model in force
