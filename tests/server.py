"""Starting real servers on 127.0.0.1 for tests (`arbiter serve`, and peers such as `transformers serve`), waiting
until they answer, and stopping them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

# judge_max_reasoning_tokens of the session server (conftest.py), which tests of the judge read.
JUDGE_TOKENS = 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(
    command: list[str], log: Path, ready_url: str, timeout: float = 60, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Runs `command` with its output in `log` until `ready_url` answers 200; stops it afterwards."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited early ({process.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ready_url} not answering in {timeout} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RunningServer:
    url: str
    grpc_url: str
    process: subprocess.Popen
    log: Path

    @property
    def grpc_target(self) -> str:
        return self.grpc_url.removeprefix("grpc://")

    def logs(self) -> str:
        return self.log.read_text()


@contextmanager
def running_server(
    log_dir: Path, *flags: str, wait_ready: bool = True, port: int | None = None
) -> Iterator[RunningServer]:
    """`arbiter serve` with `flags`, on free HTTP and gRPC ports (or HTTP on `port`, to start one again where it
    was); waits for /readyz (or /healthz)."""
    port, grpc_port = port or free_port(), free_port()
    log = log_dir / f"server-{port}.log"
    command = [sys.executable, "-m", "arbiter.cli", "serve", "--port", str(port), "--grpc-port", str(grpc_port), *flags]
    url = f"http://127.0.0.1:{port}"
    # Each server gets its own preference store unless the flags name one (the default is in the home folder).
    env = {"ARBITER_ANNOTATION_DB": f"sqlite:///{log_dir / f'annotations-{port}.sqlite'}"}
    with server_process(command, log, url + ("/readyz" if wait_ready else "/healthz"), env=env) as process:
        yield RunningServer(url, f"grpc://127.0.0.1:{grpc_port}", process, log)


def add_annotator(db: str, name: str, role: str = "annotator") -> str:
    """`arbiter annotators add` against the store at `db` (how the first lead is made); returns the key."""
    done = subprocess.run(
        [sys.executable, "-m", "arbiter.cli", "annotators", "add", name, "--role", role, "--db", db],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()
