"""The torch backend: serves a training checkpoint on a GPU (or CPU) with the same batching as ONNX.

Only `--backend torch` imports this module, so the default ONNX path never loads torch.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

import arbiter
from arbiter.bundle import BundleError, Manifest
from arbiter.training.checkpoint import SPEC_FILE
from arbiter.training.torch_scorer import TorchScorer


def open_checkpoint(path: Path) -> tuple[Manifest, TorchScorer]:
    if not (path / SPEC_FILE).is_file():
        raise BundleError(
            f"{path}: the torch backend serves training checkpoints (a folder with {SPEC_FILE}, "
            "such as runs/NAME/checkpoint); ONNX bundles are served by the default onnx backend"
        )
    scorer = TorchScorer.from_checkpoint(path, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    manifest = Manifest(
        name=path.parent.name,
        model_version=f"checkpoint-{int(path.stat().st_mtime)}",
        created_at=dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
        arbiter_version=arbiter.__version__,
        model=scorer.model.spec,
    )
    return manifest, scorer
