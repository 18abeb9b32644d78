"""The SandboxFusion backend against a stand-in for SandboxFusion: that service (a cluster of container sandboxes)
cannot run here. The stand-in executes nothing: it gives canned answers in the shape SandboxFusion's API
documentation shows for POST /run_code, chosen by a marker in the program, and records what it was sent. Through
the server too: the built-in `code` spec with `--sandbox-backend sandbox_fusion`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from arbiter.sandbox.base import SandboxLimits
from arbiter.sandbox.fusion import SandboxFusionSandbox
from arbiter.verifiers import code
from tests.server import running_server


def run_result(status: str, return_code: int | None, stdout: str = "", stderr: str = "") -> dict:
    return {"status": status, "execution_time": 0.05, "return_code": return_code, "stdout": stdout, "stderr": stderr}


# The documented answers: a program that finished, one that failed, one past its time limit, a sandbox error.
CANNED = {
    "FINISHES": {"status": "Success", "message": "", "compile_result": None,
                 "run_result": run_result("Finished", 0, "hello\n"), "executor_pod_name": None, "files": {}},
    "FAILS": {"status": "Failed", "message": "", "compile_result": None,
              "run_result": run_result("Finished", 1, "", "Traceback (most recent call last):\nAssertionError\n"),
              "executor_pod_name": None, "files": {}},
    "LOOPS": {"status": "Failed", "message": "", "compile_result": None,
              "run_result": run_result("TimeLimitExceeded", None), "executor_pod_name": None, "files": {}},
    "BREAKS": {"status": "SandboxError", "message": "run failed: container exited", "compile_result": None,
               "run_result": None, "executor_pod_name": None, "files": {}},
}  # fmt: skip


class StandIn(BaseHTTPRequestHandler):
    """Stand-in for SandboxFusion: canned answers by marker, and every request body kept."""

    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        StandIn.received.append({"path": self.path, **body})
        marker = next((m for m in CANNED if m in body["code"]), "FINISHES")
        data = json.dumps(CANNED[marker]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def fusion() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_requests_and_answers_follow_the_documented_api(fusion):
    sandbox = SandboxFusionSandbox(fusion, slots=2)
    limits = SandboxLimits(wall_s=7, memory_mb=256)

    async def runs():
        return await asyncio.gather(
            *(sandbox.run(f"# {m}\nprint('hello')", "in", limits) for m in ("FINISHES", "FAILS", "LOOPS"))
        )

    finished, failed, looped = asyncio.run(runs())
    assert finished.passed and finished.stdout == "hello\n"
    assert not failed.passed and failed.exit_code == 1 and "AssertionError" in failed.stderr
    assert looped.timed_out and not looped.passed
    sent = StandIn.received[-1]
    assert sent["path"] == "/run_code" and sent["language"] == "python"
    assert (sent["run_timeout"], sent["memory_limit_MB"], sent["stdin"]) == (7, 256, "in")


def test_a_sandbox_error_or_no_answer_is_an_error_verdict_never_a_wrong_one(fusion):
    label = {"test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "f"}
    broken = asyncio.run(
        code.check("def f():\n    return 1  # BREAKS", label, code.CodeRules(), SandboxFusionSandbox(fusion))
    )
    assert broken.status == "error" and "container exited" in (broken.detail or "")
    gone = SandboxFusionSandbox("http://127.0.0.1:9")  # nothing listens there
    assert asyncio.run(code.check("def f():\n    return 1", label, code.CodeRules(), gone)).status == "error"
    wrong = asyncio.run(
        code.check("def f():\n    return 2  # FAILS", label, code.CodeRules(), SandboxFusionSandbox(fusion))
    )
    assert wrong.status == "wrong"


def test_the_server_runs_the_code_spec_on_sandbox_fusion(fusion, bundle_dir: Path, tmp_path: Path):
    flags = ["--bundles", f"rm={bundle_dir}", "--judge-backend", "off", "--reward-state-path", ""]
    flags += ["--sandbox-backend", "sandbox_fusion", "--sandbox-url", fusion]
    label = {"test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "f"}
    bodies = ["return 1", "return 2  # FAILS", "while True: pass  # LOOPS", "...  # BREAKS"]
    responses = [f"```python\ndef f():\n    {b}\n```" for b in bodies]
    with running_server(tmp_path, *flags) as server:
        body = {"spec": "code", "items": [{"prompt": "p", "response": r, "label": label} for r in responses]}
        got = httpx.post(server.url + "/v1/reward", json=body, timeout=60).json()
    assert [v["status"] for v in got["verifications"]["passed"]] == ["ok", "wrong", "wrong", "error"]
    assert got["rewards"] == [1.0, 0.0, 0.0, 0.0] and got["mask"] == [False, False, False, True]
    assert "check(f)" in StandIn.received[-1]["code"]  # the tests travel with the program
