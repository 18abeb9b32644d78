"""Fuzzing from the server's own OpenAPI spec with schemathesis (its coverage, fuzzing and stateful phases): no
5xx, and every answer has a documented status, content type and body shape. The judge routes are left out here
(the judge is off, so they answer 503 by design; tests/test_server_judge.py covers them), and so is
/v1/admin/models (it loads whatever path it is given)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import add_annotator, running_server

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


@pytest.mark.slow
def test_no_server_errors_and_answers_as_documented(bundle_dir: Path, tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    lead = add_annotator(db, "lead", "lead")
    flags = ["--bundles", f"rm={bundle_dir}", "--annotation-db", db, "--judge-backend", "off", "--grpc-port", "0"]
    report = tmp_path / "schemathesis.json"
    with running_server(tmp_path, *flags, "--max-items", "64") as server:
        run = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
                "--checks", CHECKS, "--max-examples", "30", "--seed", "7",
                # One worker: hypothesis parses lambdas with ast.parse, which CPython 3.11.7 cannot run in two
                # threads at once ("AST constructor recursion depth mismatch").
                "--workers", "1",
                "-H", f"Authorization: Bearer {lead}",  # a lead: the annotation routes get past 401
                "--exclude-path", "/v1/admin/models", "--exclude-path", "/v1/judge",
                "--exclude-path", "/v1/constitutions",
                "--report", "json", "--report-json-path", str(report),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
        unexpected = [line for line in server.logs().splitlines() if '"unexpected error"' in line]
    summary = json.loads(report.read_text())
    cases = summary["test_cases"]
    print(f"\nschemathesis: {summary['operations']['tested']} operations, {cases['generated']} test cases")
    assert run.returncode == 0, run.stdout[-6000:]
    assert summary["failures"] == [] and cases["generated"] > 1000 and summary["operations"]["tested"] >= 20
    assert unexpected == []
