"""The serving image, built and run without a Docker daemon: Debian's podman builds the Dockerfile's `serve` target
on a base image made here with mmdebstrap and `podman import` (a stand-in for the public python:3.11-slim image,
which this machine cannot pull; it carries the host's extra CA certificates so that pip inside the build trusts
what the host's pip trusts). The container then serves the test bundle on 127.0.0.1, is scored over HTTP and gRPC
with an API key, passes its HEALTHCHECK, runs as a non-root user under tini without torch, and stops cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from arbiter.clients import RewardClient
from arbiter.service.access.keys import digest
from tests.server import free_port

ROOT = Path(__file__).resolve().parents[1]
HOST_CA = Path("/usr/local/share/ca-certificates")
# This machine's quirks: vfs storage, runc, and ulimits under the sandbox's own.
STORAGE = '[storage]\ndriver = "vfs"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n'
CONTAINERS = (
    '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
)


def podman(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Iterator[tuple[dict[str, str], str]]:
    if not (shutil.which("podman") and shutil.which("mmdebstrap")):
        pytest.skip("needs Debian's podman and mmdebstrap (.ci/run installs them)")
    root = tmp_path_factory.mktemp("podman")
    (root / "storage.conf").write_text(STORAGE.format(root=root))
    (root / "containers.conf").write_text(CONTAINERS)
    env = {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_CONF": str(root / "containers.conf"),
    }
    certificates = sorted(str(c) for c in HOST_CA.glob("*.crt"))
    hooks = ['mkdir -p "$1/usr/local/share/ca-certificates"']
    if certificates:
        hooks.append(f"copy-in {' '.join(certificates)} /usr/local/share/ca-certificates/")
    hooks.append('chroot "$1" update-ca-certificates')
    base = root / "base.tar"
    command = ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates"]
    command += [f"--customize-hook={hook}" for hook in hooks]
    made = subprocess.run([*command, "bookworm", str(base)], capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    assert podman(env, "import", str(base), "localhost/arbiter-base:test").returncode == 0
    tag = f"localhost/arbiter:test-{uuid.uuid4().hex[:8]}"
    built = podman(
        env, "build", "--format", "docker", "--network", "host", "--target", "serve",
        "--build-arg", "BASE_IMAGE=localhost/arbiter-base:test", "-t", tag, str(ROOT),
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    yield env, tag
    podman(env, "rmi", "-f", tag)


@pytest.mark.slow
def test_the_serving_image_runs_and_answers_over_http_and_grpc(image, bundle_dir: Path):
    env, tag = image
    key = f"ark_container_{uuid.uuid4().hex}"
    keys = f"keys: [{{name: tester, sha256: {digest(key)}, scopes: [score]}}]"
    name = f"arbiter-test-{uuid.uuid4().hex[:8]}"
    http_port, grpc_port = free_port(), free_port()
    started = podman(
        env, "run", "-d", "--name", name,
        "-p", f"127.0.0.1:{http_port}:8000", "-p", f"127.0.0.1:{grpc_port}:50051",
        "-v", f"{bundle_dir}:/bundles/default:ro", "-e", f"ARBITER_API_KEYS={keys}", tag,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, podman(env, "logs", name).stdout[-3000:]
            time.sleep(0.5)
        assert httpx.post(url + "/v1/score", json={"items": [{"prompt": "a", "response": "b"}]}).status_code == 401
        with RewardClient(url, api_key=key) as client:
            over_http = client.score("How do I boil an egg?", ["Gently.", "Loudly."]).scores
        with RewardClient(f"grpc://127.0.0.1:{grpc_port}", api_key=key) as client:
            over_grpc = client.score("How do I boil an egg?", ["Gently.", "Loudly."]).scores
        assert over_http == pytest.approx(over_grpc, abs=1e-6) and len(over_http) == 2

        assert podman(env, "healthcheck", "run", name).returncode == 0
        assert podman(env, "exec", name, "id", "-u").stdout.strip() == "10001"
        assert "tini" in podman(env, "exec", name, "cat", "/proc/1/cmdline").stdout
        no_torch = podman(env, "exec", name, "python3", "-c", "import torch")
        assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    finally:
        stopped = podman(env, "stop", "-t", "30", name)
        exit_code = podman(env, "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        logs = podman(env, "logs", name).stdout + podman(env, "logs", name).stderr
        podman(env, "rm", "-f", name)
    assert stopped.returncode == 0 and exit_code == "0"  # SIGTERM through tini: a clean, drained stop
    assert '"msg": "stopped"' in logs and key not in logs
