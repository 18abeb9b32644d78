"""Session-wide fixtures: one real short training run and its bundle, shared by every test that needs them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
if TYPE_CHECKING:
    from arbiter.bundle.onnx_model import OnnxRewardModel
    from tests.server import RunningServer

PREFERENCES = ROOT.parent / "shared" / "data" / "preferences"
GSM8K = ROOT.parent / "shared" / "data" / "verifiable" / "gsm8k_model_solutions.jsonl"
# Checkpoints in other trainers' formats and the bundles imported from them (session fixtures).
pytest_plugins = ["tests.reward_checkpoints"]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# `make test` runs the suite on two pytest-xdist workers with --dist loadfile: a test file runs whole on one worker,
# so its module fixtures are made once. These files take `cases` (tests/reward_checkpoints.py), which holds models in
# memory and costs minutes to build, so they run on one worker together.
SHARING_A_WORKER = {
    f"tests/{name}.py": "cases" for name in ["test_import", "test_engine_routes", "test_remote_backend"]
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getvalue("dist") != "loadfile":
        return None  # pytest-xdist's own scheduler for the mode asked for
    from xdist.scheduler import LoadFileScheduling

    class ByFileOrShared(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SHARING_A_WORKER.get(file, file)

    return ByFileOrShared(config, log)


def made_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, done: str, make: Callable[[Path], object], kept: bool = False
) -> Path:
    """The folder `name`, made by `make(folder)` once for the whole run: the pytest-xdist workers of one run share the
    folder above their own base folders, and the first to come makes it while the others wait on its lock. A folder
    is made when it holds `done`. A `kept` folder (a training run) lives in ARBITER_TEST_RUN_CACHE where that is set,
    and so lasts between local pytest invocations (CI never sets it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cache = os.environ.get("ARBITER_TEST_RUN_CACHE")
    root = Path(cache) if kept and cache else shared
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with FileLock(shared / f"{name}.lock"):
        if not (folder / done).exists():
            make(folder)
    return folder


@pytest.fixture(scope="session")
def preferences() -> Path:
    if not PREFERENCES.is_dir():
        pytest.skip(f"shared preference data not found at {PREFERENCES}")
    return PREFERENCES


@pytest.fixture(scope="session")
def trained_run(preferences: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, short MiniLM run on the shared HH-RLHF file: about a minute and a half on 2 cores."""
    from arbiter.data.sources import SourceSpec
    from arbiter.training.config import TrainConfig
    from arbiter.training.train import train

    def run(out: Path) -> None:
        train(TrainConfig(
            data=[SourceSpec(path=str(preferences / "hh_rlhf_harmless.jsonl"))],
            base_model="sentence-transformers/all-MiniLM-L6-v2",
            max_length=64, batch_size=16, max_steps=40, lr=5e-5, head_lr=2e-3,
            eval_fraction=0.2, log_every=5, eval_every=20, out=out, name="test-minilm",
        ))  # fmt: skip

    return made_once(tmp_path_factory, "minilm", "checkpoint", run, kept=True)


@pytest.fixture(scope="session")
def bundle_dir(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arbiter.training.export import export_bundle

    def export(out: Path) -> None:
        export_bundle(trained_run / "checkpoint", out, name="test-minilm", model_version="1")

    return made_once(tmp_path_factory, "test-minilm", "manifest.json", export)


@pytest.fixture(scope="session")
def prm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, short PRM run on the GSM8K stepwise set: MiniLM with its top two blocks trained, about a minute on 2
    cores (the lower four are run once per solution and replayed)."""
    from arbiter.data.sources import SourceSpec
    from arbiter.training.config import TrainConfig
    from arbiter.training.train import train

    if not GSM8K.is_file():
        pytest.skip(f"shared data not found at {GSM8K}")

    def run(out: Path) -> None:
        train(TrainConfig(
            objective="prm", data=[SourceSpec(path=str(GSM8K))],
            base_model="sentence-transformers/all-MiniLM-L6-v2",
            max_length=192, max_groups_per_source=1000, eval_fraction=0.2, freeze_layers=4,
            batch_size=16, max_steps=60, lr=2e-4, head_lr=2e-3, eval_every=0, out=out,
        ))  # fmt: skip

    return made_once(tmp_path_factory, "prm", "checkpoint", run, kept=True)


@pytest.fixture(scope="session")
def prm_bundle(prm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arbiter.training.export import export_bundle

    def export(out: Path) -> None:
        export_bundle(prm_run / "checkpoint", out, name="test-prm", model_version="1")

    return made_once(tmp_path_factory, "test-prm", "manifest.json", export)


@pytest.fixture(scope="session")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real `arbiter serve` (HTTP and gRPC) on the test bundle, named `rm`, for every test that only talks to it."""
    from tests.server import JUDGE_TOKENS, running_server

    # The local judge writes its rationales on the CPU, and these tests read verdicts, not prose: a short rationale
    # (test_server_judge checks the cap holds) keeps a judge-backed request to seconds.
    flags = ["--bundles", f"rm={bundle_dir}", "--max-items", "64", "--judge-max-reasoning-tokens", str(JUDGE_TOKENS)]
    with running_server(tmp_path_factory.mktemp("logs"), *flags) as s:
        yield s


@pytest.fixture(scope="session")
def reference(bundle_dir: Path) -> OnnxRewardModel:
    """The bundle scored in process: what every answer from the server must match."""
    from arbiter.bundle import load_bundle
    from arbiter.bundle.onnx_model import OnnxRewardModel

    return OnnxRewardModel.from_bundle(load_bundle(bundle_dir))
