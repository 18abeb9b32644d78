"""The serving image, built and run without a Docker daemon: Debian's podman builds the Dockerfile's `serve` target
on a base image made here with mmdebstrap and `podman import` (a stand-in for the public python:3.11-slim image,
which this machine cannot pull; it carries the host's extra CA certificates so that pip inside the build trusts
what the host's pip trusts). The container then serves the test bundle on 127.0.0.1, is scored over HTTP and gRPC
with an API key, passes its HEALTHCHECK, runs as a non-root user under tini without torch, and stops cleanly."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

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


def container_logs(env: dict[str, str], name: str) -> str:
    logs = podman(env, "logs", name)
    return logs.stdout + logs.stderr  # the server logs to stderr


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
            assert time.monotonic() < deadline, container_logs(env, name)[-3000:]
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
        logs = container_logs(env, name)
        podman(env, "rm", "-f", name)
    assert stopped.returncode == 0 and exit_code == "0"  # SIGTERM through tini: a clean, drained stop
    assert '"msg": "stopped"' in logs and key not in logs


# What podman 4.3.1 (Debian bookworm) cannot take from the rendered Deployment, replaced for this test only:
# a `secret` volume crashes it (nil pointer in kube.VolumeFromSecret), so the Secret becomes a ConfigMap of the same
# data; it restarts init containers under the Deployment's restartPolicy Always and then fails to remove them, so
# the bundle comes from a hostPath (the manifests' other documented way: a volume at /bundles); and port mappings
# are refused on the namespace's own network, where the ports are reachable without them.
GRPC_HEALTH = """
import sys, grpc, httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
url = "http://127.0.0.1:8000"
assert httpx.get(url + "/healthz").status_code == 200, "startup probe"
assert httpx.get(url + "/readyz").status_code == 200, "readiness probe"
with grpc.insecure_channel("127.0.0.1:50051") as channel:
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="")).status
    assert status == health_pb2.HealthCheckResponse.SERVING, "liveness probe"
item = {"items": [{"prompt": "a", "response": "b"}]}
assert httpx.post(url + "/v1/score", json=item).status_code == 401
key = {"Authorization": "Bearer ark_example_do_not_use"}  # the example key list, from the Secret
assert httpx.post(url + "/v1/score", json=item, headers=key).status_code == 200
print("probes answered")
"""


def for_podman(documents: list[dict], tag: str, bundles: Path) -> list[dict]:
    played = []
    for doc in documents:
        if doc["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
            played.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"], "data": data})
        elif doc["kind"] == "ConfigMap":
            played.append(doc)
        elif doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 1
            pod = doc["spec"]["template"]["spec"]
            del pod["initContainers"]
            (server,) = pod["containers"]
            server["image"] = tag
            ports = {p["name"]: p["containerPort"] for p in server.pop("ports")}
            for probe in ("startupProbe", "readinessProbe"):
                server[probe]["httpGet"]["port"] = ports[server[probe]["httpGet"]["port"]]
            for volume in pod["volumes"]:
                if "secret" in volume:
                    volume["configMap"] = {"name": volume.pop("secret")["secretName"]}
                if volume["name"] == "bundles":
                    volume.pop("emptyDir")
                    volume["hostPath"] = {"path": str(bundles), "type": "Directory"}
            played.append(doc)
    return played


@pytest.mark.slow
def test_the_deployments_pod_runs_under_kube_play_in_a_network_namespace(image, bundle_dir: Path, tmp_path: Path):
    env, tag = image
    if not shutil.which("kubectl"):
        pytest.skip("no kubectl")
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / "cpu")], capture_output=True, text=True, check=True
    ).stdout
    shutil.copytree(bundle_dir, tmp_path / "bundles" / "default")
    manifest = tmp_path / "pod.yaml"
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    manifest.write_text(yaml.safe_dump_all(for_podman(documents, tag, tmp_path / "bundles")))
    namespace = f"arbiter-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    enter = ["nsenter", f"--net=/run/netns/{namespace}"]  # the network only: `ip netns exec` would remount /sys
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        played = subprocess.run(
            [*enter, "podman", "kube", "play", "--network", "host", str(manifest)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert played.returncode == 0, played.stderr[-3000:]
        deadline = time.monotonic() + 120
        while True:
            probed = subprocess.run([*enter, sys.executable, "-c", GRPC_HEALTH], capture_output=True, text=True)
            if probed.returncode == 0:
                break
            assert time.monotonic() < deadline, probed.stderr[-2000:]
            time.sleep(1)
        assert "probes answered" in probed.stdout
    finally:
        subprocess.run([*enter, "podman", "kube", "down", str(manifest)], capture_output=True, env=env, timeout=120)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
