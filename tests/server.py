"""Starting a real `arbiter serve` process on 127.0.0.1 for tests, and stopping it."""

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
def running_server(log_dir: Path, *flags: str, wait_ready: bool = True) -> Iterator[RunningServer]:
    port, grpc_port = free_port(), free_port()
    log = log_dir / f"server-{port}.log"
    command = [sys.executable, "-m", "arbiter.cli", "serve", "--port", str(port), "--grpc-port", str(grpc_port), *flags]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{grpc_port}", process, log)
    try:
        _wait(server, "/readyz" if wait_ready else "/healthz")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait(server: RunningServer, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.logs()}")
        try:
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server not answering {path} in {timeout} s:\n{server.logs()}")
