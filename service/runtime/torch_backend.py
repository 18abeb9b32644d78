"""The torch backend: serves a training checkpoint, a bundle's bf16 weights, or an imported bundle of runtime torch
(a model with no ONNX graph), on a GPU (or CPU) with the same batching as ONNX.

Only `--backend torch`, `--precision bf16` and bundles of runtime torch import this module, so the default ONNX path
never loads torch.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils import benchmark

import arbiter
from arbiter.bundle import Bundle, BundleError, Manifest
from arbiter.bundle.render import pad_batch
from arbiter.training.bf16_weights import BF16_FILE, load_bf16
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
    """The `precision` setting on this backend: fp32, or bf16 (faster than fp32 only where the matrix units take
    it, which `bf16_speedup` measures). int8 names an ONNX file, which this backend does not read."""
    dtype = DTYPES.get(precision)
    if dtype is None:
        raise BundleError(f"precision {precision!r}: the torch backend runs {' or '.join(DTYPES)}")
    return dtype


# A MiniLM-sized layer's product (1,024 tokens, hidden 384, feed-forward 1,536): long enough to time, short enough
# to run at every bf16 load (tens of milliseconds).
PROBE_SHAPE = (1024, 384, 1536)


def _matmul_seconds(device: torch.device, dtype: torch.dtype) -> float:
    rows, inner, cols = PROBE_SHAPE
    a, b = torch.randn(rows, inner, device=device).to(dtype), torch.randn(inner, cols, device=device).to(dtype)
    # torch's Timer warms up and synchronizes CUDA; it runs one thread unless told the model's count
    timer = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return timer.timeit(5).median


@functools.cache
def bf16_speedup(device: torch.device) -> float:
    """How many times faster a bf16 matrix product runs than an fp32 one on `device`, measured: CPU flags do not
    say it (with AVX512_BF16, bf16 ran 2.2-3.0x fp32 on a Zen 4 EPYC and 0.6-0.75x on a Xeon whose AMX was not
    exposed)."""
    return _matmul_seconds(device, torch.float32) / _matmul_seconds(device, torch.bfloat16)


# oneDNN builds a kernel per input shape on the CPU, and for bf16 keeps a copy of the weights laid out for each
# (AMX tiles): padded to their longest sequence, 1,024 texts of 14 to 512 tokens made hundreds of shapes. Measured
# in process on a 2-core Xeon with AMX, 2,048-token batches: padded to a multiple of 32 tokens, 166-177 seq/s and
# 650 MB peak; to the longest sequence, 131-181 seq/s (fast only once every shape had been seen) and 1,316 MB;
# multiples of 16 and 64 ran 156-160 and 150-159 seq/s. fp32 gains nothing from it (more padding, no copies).
BF16_CPU_PAD_MULTIPLE = 32


def pad_multiple(device: torch.device, dtype: torch.dtype) -> int:
    return BF16_CPU_PAD_MULTIPLE if dtype == torch.bfloat16 and device.type == "cpu" else 1


def checked_dtype(precision: str, device: torch.device) -> torch.dtype:
    dtype = torch_dtype(precision)
    if dtype == torch.bfloat16:
        speedup = bf16_speedup(device)
        slower = ": slower than fp32" if speedup < 1 else ""
        log.log(
            logging.WARNING if slower else logging.INFO,
            f"bf16 matrix products run {speedup:.2f}x fp32's here{slower}",
            extra={"device": str(device), "bf16_speedup": round(speedup, 2)},
        )
    return dtype


def open_checkpoint(path: Path, device: str = "auto", precision: str = "fp32") -> tuple[Manifest, TorchScorer]:
    if not (path / SPEC_FILE).is_file():
        raise BundleError(
            f"{path}: the torch backend serves training checkpoints (a folder with {SPEC_FILE}, "
            "such as runs/NAME/checkpoint); ONNX bundles are served by the default onnx backend"
        )
    on = torch_device(device)
    dtype = checked_dtype(precision, on)
    scorer = TorchScorer.from_checkpoint(path, on, dtype, pad_multiple(on, dtype))
    manifest = Manifest(
        name=path.parent.name,
        model_version=f"checkpoint-{int(path.stat().st_mtime)}",
        created_at=dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
        arbiter_version=arbiter.__version__,
        model=scorer.model.spec,
    )
    return manifest, scorer


def open_bf16(bundle: Bundle, threads: int = 0, device: str = "auto") -> TorchScorer:
    """A bundle's bf16 weights (model.bf16.safetensors), when its export's fidelity gate kept them."""
    report = bundle.manifest.bf16
    if report is None or (report.file and report.file not in bundle.manifest.files):
        remedy = (
            "import it with --runtime torch, which serves bf16 from its checkpoint"
            if bundle.manifest.source
            else "export it again with this Arbiter, or serve the training checkpoint with --backend torch"
        )
        raise BundleError(f"{bundle.path}: no {BF16_FILE} (precision bf16): {remedy}")
    if report.file is None:
        raise BundleError(f"{bundle.path}: precision bf16 was refused at export: {report.reason}")
    if threads:
        torch.set_num_threads(threads)
    on = torch_device(device)
    dtype = checked_dtype("bf16", on)
    model = load_bf16(bundle.path / report.file, bundle.manifest.model).to(on)
    return TorchScorer(model, bundle.input_builder(), on, pad_multiple=pad_multiple(on, dtype))


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
        dtype = checked_dtype(precision, self.device)
        self.model, self.pad_multiple = model.to(self.device, dtype), pad_multiple(self.device, dtype)
        self.precision = f"{precision}-torch"

    @torch.no_grad()
    def run_rows(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        ids, mask = pad_batch(sequences, self.spec.pad_token_id, self.spec.padding_side, self.pad_multiple)
        score, logits = self.model(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return torch.column_stack([score, logits]).float().cpu().numpy().astype(np.float64)

    def run(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        rows: np.ndarray = self.run_rows(sequences)[:, 0]
        return rows


def open_imported(
    bundle: Bundle, threads: int = 0, device: str = "auto", precision: str = "fp32"
) -> ImportedTorchRunner:
    return ImportedTorchRunner(bundle, threads, device, precision)
