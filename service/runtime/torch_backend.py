"""The torch backend: serves a training checkpoint, or an imported bundle of runtime torch (a model with no ONNX
graph), on a GPU (or CPU) with the same batching as ONNX.

Only `--backend torch` and bundles of runtime torch import this module, so the default ONNX path never loads torch.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import arbiter
from arbiter.bundle import Bundle, BundleError, Manifest
from arbiter.bundle.render import pad_batch
from arbiter.training.checkpoint import SPEC_FILE
from arbiter.training.importing.checkpoints import load_imported
from arbiter.training.torch_scorer import TORCH_PRECISIONS, TorchScorer

log = logging.getLogger("arbiter.models")


def torch_device(name: str) -> torch.device:
    """The `device` setting: auto is CUDA when torch sees a GPU, else the CPU; a device that is not there is the
    model's load error (the server stays up, not ready), not a crash on the first request."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise BundleError(f"device {name!r}: {exc}") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise BundleError(f"device {name!r}: the torch backend runs on cpu or cuda (cuda:N)")
    if not torch.cuda.is_available():
        raise BundleError(f"device {name!r}: torch sees no CUDA device here (torch {torch.__version__})")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise BundleError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)  # with its index, so that /v1/models says which GPU


DTYPES = {name: dtype for dtype, name in TORCH_PRECISIONS.items()}


def torch_dtype(precision: str) -> torch.dtype:
    """The `precision` setting on this backend: fp32, or bf16 (fast where the matrix units take it: a CPU with
    AVX512_BF16 or AMX, a GPU from Ampere on; elsewhere torch emulates it, slower than fp32). int8 names an ONNX
    file, which this backend does not read."""
    dtype = DTYPES.get(precision)
    if dtype is None:
        raise BundleError(f"precision {precision!r}: the torch backend runs {' or '.join(DTYPES)}")
    return dtype


def bf16_units(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware (else torch converts, slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # compute capability 8.0 and up
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def checked_dtype(precision: str, device: torch.device) -> torch.dtype:
    dtype = torch_dtype(precision)
    if dtype == torch.bfloat16 and not bf16_units(device):
        log.warning("bf16 without bf16 units: slower than fp32 here", extra={"device": str(device)})
    return dtype


def open_checkpoint(path: Path, device: str = "auto", precision: str = "fp32") -> tuple[Manifest, TorchScorer]:
    if not (path / SPEC_FILE).is_file():
        raise BundleError(
            f"{path}: the torch backend serves training checkpoints (a folder with {SPEC_FILE}, "
            "such as runs/NAME/checkpoint); ONNX bundles are served by the default onnx backend"
        )
    on = torch_device(device)
    scorer = TorchScorer.from_checkpoint(path, on, checked_dtype(precision, on))
    manifest = Manifest(
        name=path.parent.name,
        model_version=f"checkpoint-{int(path.stat().st_mtime)}",
        created_at=dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
        arbiter_version=arbiter.__version__,
        model=scorer.model.spec,
    )
    return manifest, scorer


class ImportedTorchRunner:
    """An imported model that has no graph, run by torch on the bundle's inputs (its tokenizer and rendering). In
    bf16 the whole model is cast, its own head too: the model class is the checkpoint's, not Arbiter's."""

    def __init__(self, bundle: Bundle, threads: int, device: str, precision: str) -> None:
        source = bundle.manifest.source
        if source is None:
            raise BundleError(f"{bundle.path}: runtime torch, but the manifest names no source checkpoint")
        if threads:
            torch.set_num_threads(threads)
        objective = bundle.manifest.objectives.score if bundle.manifest.objectives else None
        self.spec, self.builder, self.device = bundle.manifest.model, bundle.input_builder(), torch_device(device)
        model = load_imported(source.adapter or source.checkpoint, objective).model
        self.model = model.to(self.device, checked_dtype(precision, self.device))
        self.precision = f"{precision}-torch"

    @torch.no_grad()
    def run_rows(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        ids, mask = pad_batch(sequences, self.spec.pad_token_id, self.spec.padding_side)
        score, logits = self.model(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return torch.column_stack([score, logits]).float().cpu().numpy().astype(np.float64)

    def run(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        rows: np.ndarray = self.run_rows(sequences)[:, 0]
        return rows


def open_imported(
    bundle: Bundle, threads: int = 0, device: str = "auto", precision: str = "fp32"
) -> ImportedTorchRunner:
    return ImportedTorchRunner(bundle, threads, device, precision)
