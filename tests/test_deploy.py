"""How Arbiter ships, checked offline: the Dockerfile passes hadolint, every kustomize overlay renders and passes
kubernetes-validate --strict for two Kubernetes versions, broken manifests fail, and the manifests keep the
promises the server relies on (probes, security context, shutdown timing, autoscaling, configuration that the
server actually reads)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OVERLAYS = ["cpu", "gpu", "postgres", "vllm"]
KUBERNETES_VERSIONS = ["1.30.0", "1.33.0"]
KUBECTL = shutil.which("kubectl")


def run(*command: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, input=stdin, timeout=120)


def test_the_dockerfile_passes_hadolint(tmp_path: Path):
    assert run(BIN / "hadolint", ROOT / "Dockerfile").returncode == 0
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD arbiter serve\n")
    result = run(BIN / "hadolint", careless)
    assert result.returncode != 0
    assert {"DL3007", "DL3008", "DL3015", "DL3025"} <= {c for c in result.stdout.split() if c.startswith("DL")}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("no kubectl (Debian: apt-get install kubectl)")
    out = {}
    for overlay in OVERLAYS:
        result = run(KUBECTL, "kustomize", ROOT / "k8s" / "overlays" / overlay)
        assert result.returncode == 0, result.stderr
        out[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def validate(documents: list[dict], version: str, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / f"manifests-{version}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return run(BIN / "kubernetes-validate", "--strict", "-k", version, path)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_validates_strictly(overlay: str, version: str, rendered, tmp_path: Path):
    result = validate(rendered[overlay], version, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = result.stdout.count(" passed for resource ")
    assert passed == len(rendered[overlay]) - 1  # all but the ServiceMonitor, a CRD with no schema here
    assert "Couldn't find schema for kind ServiceMonitor" in result.stdout + result.stderr


def test_broken_manifests_fail(rendered, tmp_path: Path):
    deployment = next(d for d in rendered["cpu"] if d["kind"] == "Deployment")
    typo = yaml.safe_load(yaml.safe_dump(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    wrong_type = yaml.safe_load(yaml.safe_dump(deployment))
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    missing = yaml.safe_load(yaml.safe_dump(deployment))
    del missing["spec"]["selector"]
    for broken in (typo, wrong_type, missing):
        assert validate([broken], KUBERNETES_VERSIONS[0], tmp_path).returncode != 0


def test_the_deployment_keeps_the_servers_promises(rendered):
    from arbiter.service.settings import ServerSettings

    docs = {d["kind"]: d for d in rendered["cpu"]}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["grpc"]["port"] == 50051
    context = server["securityContext"]
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    assert server["resources"]["requests"] and server["resources"]["limits"]

    settings_map = next(d for d in rendered["cpu"] if d["kind"] == "ConfigMap" and "settings" in d["metadata"]["name"])
    env = settings_map["data"]
    fields = {f"ARBITER_{name.upper()}" for name in ServerSettings.model_fields}
    assert set(env) <= fields, set(env) - fields  # a misspelt setting would be ignored silently
    drain, grace = float(env["ARBITER_SHUTDOWN_DRAIN_S"]), float(env["ARBITER_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > drain + grace
    mounts = {m["mountPath"] for m in server["volumeMounts"]}
    assert {"/bundles", "/data", "/tmp", "/etc/arbiter/keys"} <= mounts  # every path the server writes or reads

    metrics = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert {m["type"] for m in metrics} == {"Resource", "Pods"}
    assert any(m.get("pods", {}).get("metric", {}).get("name") == "arbiter_queue_depth" for m in metrics)
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    service_ports = {p["name"]: p["port"] for p in docs["Service"]["spec"]["ports"]}
    assert service_ports == {"http": 8000, "grpc": 50051}

    gpu = {d["kind"]: d for d in rendered["gpu"]}
    (gpu_server,) = gpu["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert gpu_server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    gpu_settings = next(d for d in rendered["gpu"] if d["kind"] == "ConfigMap" and "settings" in d["metadata"]["name"])
    assert gpu_settings["data"]["ARBITER_BACKEND"] == "torch" and gpu_server["image"].endswith("-train")

    postgres = rendered["postgres"]
    (pg_server,) = next(d for d in postgres if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    from_secret = {e["name"] for e in pg_server["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert from_secret == {"ARBITER_ANNOTATION_DB", "ARBITER_REDIS_URL"}
    job = next(d for d in postgres if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["arbiter", "db", "upgrade"]


def test_the_example_configuration_is_what_the_server_reads():
    from arbiter.judge.constitution import ConstitutionLibrary
    from arbiter.rewards.spec import SpecLibrary
    from arbiter.service.access.keys import read_keys

    config = ROOT / "k8s" / "base" / "config"
    assert ConstitutionLibrary([config / "constitutions"]).get("support").name == "support"
    assert "ppo" in SpecLibrary([config / "reward-specs"]).names
    (key,) = read_keys(str(config / "api-keys.yaml"), None).values()
    assert key.name == "example-trainer" and key.scopes == ["score"]


def test_the_vllm_overlay_puts_arbiter_in_front_of_the_engine(rendered):
    from arbiter.service.settings import ServerSettings

    docs = rendered["vllm"]
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and "settings" in d["metadata"]["name"])["data"]
    remote = {k for k in settings if k.startswith("ARBITER_REMOTE_")}
    assert remote and remote <= {f"ARBITER_{name.upper()}" for name in ServerSettings.model_fields}
    engine = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm")
    container = engine["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # what the remote backend polls too
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "vllm")
    assert service["spec"]["selector"] == engine["spec"]["template"]["metadata"]["labels"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    to_engine = [
        rule for rule in policy["spec"]["egress"] if {"port": 8000, "protocol": "TCP"} in rule.get("ports", [])
    ]
    assert to_engine and to_engine[0]["to"][0]["podSelector"]["matchLabels"] == service["spec"]["selector"]
