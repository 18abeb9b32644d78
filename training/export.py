"""`arbiter export`: a training checkpoint in, a validated bundle folder out (see docs/bundle.md).

Export proves itself before it writes the manifest: ONNX and torch scores must agree on real eval inputs,
and the reduced-precision files (int8 for ONNX Runtime, bf16 weights for the torch backend) are kept only when they
pass the fidelity gate: held-out accuracy close to fp32's and scores that rank like fp32's.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

import arbiter
from arbiter.bundle.checksums import file_entry
from arbiter.bundle.load import Bundle, load_bundle
from arbiter.bundle.manifest import MANIFEST_FILE, FidelityReport, Graph, Manifest, ModelSpec, Normalization, Parity
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.render import InputBuilder
from arbiter.data.load import load_source
from arbiter.data.schema import PreferenceGroup
from arbiter.data.sources import SourceSpec
from arbiter.training.batching import encode_groups
from arbiter.training.bf16_weights import load_bf16, save_bf16
from arbiter.training.checkpoint import load_checkpoint
from arbiter.training.evaluate import (
    Metrics,
    evaluation_section,
    format_table,
    metrics,
    pairs_from_scores,
    spearman,
    to_json,
    write_json,
)
from arbiter.training.model import RewardModel
from arbiter.training.model_card import model_card
from arbiter.training.step_bundle import check_steps, step_evaluation
from arbiter.training.step_metrics import format_step_metrics
from arbiter.training.torch_scorer import TorchScorer

OPSET = 18


class ExportError(RuntimeError):
    """Export refused to write a bundle that would not score like the checkpoint."""


@dataclass(frozen=True)
class FidelityGate:
    """What a reduced-precision file must keep of fp32 on the eval data to be written: accuracy within
    `max_accuracy_change` (0.5 points) and a Spearman correlation of scores of at least `min_spearman`."""

    max_accuracy_change: float = 0.005
    min_spearman: float = 0.995


DEFAULT_GATE = FidelityGate()


def export_bundle(
    checkpoint: Path,
    out: Path,
    name: str | None = None,
    model_version: str | None = None,
    eval_data: Path | None = None,
    int8: bool = True,
    int8_gate: FidelityGate = DEFAULT_GATE,
    bf16: bool = True,
    bf16_gate: FidelityGate = DEFAULT_GATE,
    parity_items: int = 64,
    tolerance: float = 1e-4,
    fuse: bool = True,
) -> Bundle:
    checkpoint = Path(checkpoint)
    model, tokenizer = load_checkpoint(checkpoint)
    builder = model.input_builder(tokenizer)
    if model.spec.steps is not None:
        eval_path = Path(eval_data or checkpoint.parent / "eval.jsonl")
        return staged(
            Path(out),
            lambda staging: _write_step_bundle(
                staging, model, tokenizer, builder, eval_path, checkpoint, name, model_version, parity_items,
                tolerance, fuse,
            ),
        )  # fmt: skip
    groups = eval_groups(eval_data or checkpoint.parent / "eval.jsonl")
    eval_source = f"`{eval_data}`" if eval_data else "the training run's held-out split (prompts it never saw)"
    return staged(
        Path(out),
        lambda staging: _write_bundle(
            staging,
            model,
            tokenizer,
            builder,
            groups,
            eval_source,
            checkpoint,
            name,
            model_version,
            int8,
            int8_gate,
            bf16,
            bf16_gate,
            parity_items,
            tolerance,
            fuse,
        ),
    )


def staged(out: Path, write: Callable[[Path], None]) -> Bundle:
    """`write` fills a staging folder beside `out`, which replaces `out` only once it is complete."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-written bundle behind
        raise
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return load_bundle(out)


def new_manifest(name: str, model_version: str | None, **fields: object) -> Manifest:
    """A manifest stamped now, by this Arbiter; its version is the UTC time unless one is given."""
    now = dt.datetime.now(dt.timezone.utc)
    return Manifest.model_validate(
        {
            "name": name,
            "model_version": model_version or now.strftime("%Y%m%d%H%M%S"),
            "created_at": now.isoformat(timespec="seconds"),
            "arbiter_version": arbiter.__version__,
            **fields,
        }
    )


def seal(staging: Path, manifest: Manifest, eval_result: Metrics | None, step_table: str | None = None) -> None:
    """The model card, then the manifest with the checksums of everything else: written last."""
    (staging / "README.md").write_text(model_card(manifest, eval_result, step_table))
    manifest.files = {p.name: file_entry(p) for p in sorted(staging.iterdir()) if p.is_file()}
    (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))


def _write_bundle(
    staging: Path,
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    builder: InputBuilder,
    groups: list[PreferenceGroup],
    eval_source: str,
    checkpoint: Path,
    name: str | None,
    model_version: str | None,
    int8: bool,
    int8_gate: FidelityGate,
    bf16: bool,
    bf16_gate: FidelityGate,
    parity_items: int,
    tolerance: float,
    fuse: bool,
) -> None:
    spec = model.spec
    tokenizer.save_pretrained(staging)
    builder.tokenizer.save(str(staging / "tokenizer.json"))  # the exact tokenizer the server will run
    graph = export_onnx(model, staging / "model.onnx", ["score"], fuse)
    fp32 = OnnxRewardModel(staging / "model.onnx", spec, builder)

    sequences = [ids for item in encode_groups(groups, builder) for ids in item.ids]
    if not sequences:
        raise ExportError("no evaluation data: give --eval-data, or export a checkpoint of a run with an eval split")
    parity = _parity(model, builder, fp32, sequences[:parity_items], tolerance)
    scores = fp32.score_ids(sequences)
    pairs = pairs_from_scores(groups, scores)
    result = metrics(pairs)
    print(format_table(result), flush=True)
    (staging / "eval.json").write_text(to_json(result))
    normalization = Normalization(
        mean=float(scores.mean()),
        std=float(scores.std()),
        count=len(scores),
        source="fp32 scores of every response in the eval split",
    )
    held_out = HeldOut(groups, sequences, scores)
    int8_report = int8_file(staging, spec, builder, held_out, int8_gate) if int8 else None
    bf16_report = bf16_file(staging, model, builder, held_out, bf16_gate) if bf16 else None

    manifest = new_manifest(
        name or checkpoint.parent.name,
        model_version,
        model=spec,
        parity=parity,
        graph=graph,
        int8=int8_report,
        bf16=bf16_report,
        normalization=normalization,
        eval_accuracy=float(result["accuracy"]),
        evaluation=evaluation_section(pairs, eval_source),
        training=_training_info(checkpoint),
    )
    seal(staging, manifest, result)


def _write_step_bundle(
    staging: Path, model: RewardModel, tokenizer: PreTrainedTokenizerBase, builder: InputBuilder, eval_path: Path,
    checkpoint: Path, name: str | None, model_version: str | None, parity_items: int, tolerance: float, fuse: bool,
) -> None:  # fmt: skip
    """A process reward model's bundle: the graph gives every token's logit, read at the step tokens. No int8 file:
    its gate is defined on preference pairs, and no PRM has been measured against it."""
    tokenizer.save_pretrained(staging)
    builder.tokenizer.save(str(staging / "tokenizer.json"))
    graph = export_onnx(model, staging / "model.onnx", ["token_scores"], fuse)
    fp32 = OnnxRewardModel(staging / "model.onnx", model.spec, builder)
    parity, result = check_steps(model, builder, fp32, eval_path, parity_items, tolerance)
    if not parity.max_abs_diff <= tolerance:
        raise ExportError(f"ONNX step logits differ from torch by {parity.max_abs_diff:.2e} (> {tolerance:.0e}), or "
                          "read other steps; bundle not written")  # fmt: skip
    table = format_step_metrics(result)
    print(table, flush=True)
    write_json(result, staging / "step_eval.json")
    manifest = new_manifest(
        name or checkpoint.parent.name,
        model_version,
        model=model.spec,
        parity=parity,
        graph=graph,
        step_evaluation=step_evaluation(result, str(eval_path)),
        training=_training_info(checkpoint),
    )
    seal(staging, manifest, None, table)


def _training_info(checkpoint: Path) -> dict[str, object]:
    train_config = checkpoint.parent / "config.yaml"
    info: dict[str, object] = {"checkpoint": str(checkpoint.resolve())}
    if train_config.is_file():
        info["config"] = train_config.read_text()
    return info


def eval_groups(path: Path) -> list[PreferenceGroup]:
    if not Path(path).is_file():
        return []
    groups, _ = load_source(SourceSpec(path=str(path)))
    return groups


def export_onnx(model: nn.Module, path: Path, outputs: list[str], fuse: bool = True) -> Graph:
    """The fp32 graph of `model` (input_ids, attention_mask) -> `outputs`, batch and sequence dynamic; fused for
    ONNX Runtime unless `fuse` is false."""
    model.eval()
    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # ONNX protobufs stop at 2 GB: larger models keep their weights in a side file (listed in the manifest).
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > 1_800_000_000
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            external_data=external,
        )
    if not fuse:
        return Graph(reason="exported with fusion off")
    if external:
        return Graph(reason="weights in an external-data file: left as exported")
    return fuse_for_onnxruntime(path)


def fuse_for_onnxruntime(path: Path) -> Graph:
    """Rewrites `path` with onnxscript's ONNX Runtime fusions: one Attention operator per layer, SkipLayerNormalization,
    BiasGelu. ONNX Runtime's session optimizer finds the last two itself but no attention in graphs from
    torch.export, and attention is where the time goes at long lengths. Export checks parity on the fused file."""
    try:  # an onnxscript too old to have the fusions, or a rewriter failing on a backbone it does not know
        from onnxscript import ir
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        fused, counts = optimize_for_ort(ir.load(path))
    except Exception as exc:  # either way the graph as exported is still valid
        print(f"ONNX Runtime fusions failed ({type(exc).__name__}: {exc}); the graph is left unfused", flush=True)
        return Graph(reason=f"fusion failed: {type(exc).__name__}")
    ir.save(fused, path)
    applied = {name: count for name, count in counts.items() if count}
    print(f"fused for ONNX Runtime: {applied or 'nothing matched'}", flush=True)
    return Graph(fusions=applied, reason=None if applied else "no fusion pattern matched")


def _parity(
    model: RewardModel,
    builder: InputBuilder,
    onnx: OnnxRewardModel,
    sequences: list[list[int]],
    tolerance: float,
) -> Parity:
    reference = TorchScorer(model, builder, torch.device("cpu")).score_ids(sequences)
    diff = float(np.abs(onnx.score_ids(sequences) - reference).max())
    if diff > tolerance:
        raise ExportError(f"ONNX scores differ from torch by {diff:.2e} (> {tolerance:.0e}); bundle not written")
    return Parity(max_abs_diff=diff, items=len(sequences), tolerance=tolerance)


@dataclass(frozen=True)
class HeldOut:
    """What a reduced-precision file is judged on: the eval groups, their responses encoded, and fp32's scores."""

    groups: list[PreferenceGroup]
    sequences: list[list[int]]
    fp32_scores: np.ndarray


def int8_file(
    staging: Path, spec: ModelSpec, builder: InputBuilder, held_out: HeldOut, gate: FidelityGate
) -> FidelityReport:
    """Quantize model.onnx, score the eval sequences again, and keep the file only if it passes `gate`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = staging / "model.int8.onnx"
    # Per-channel weight scales keep more of the order of close pairs than one scale per tensor.
    quantize_dynamic(str(staging / "model.onnx"), str(target), weight_type=QuantType.QInt8, per_channel=True)
    scores = OnnxRewardModel(target, spec, builder).score_ids(held_out.sequences)
    return gated_file(target, "int8", held_out, scores, gate)


def bf16_file(
    staging: Path, model: RewardModel, builder: InputBuilder, held_out: HeldOut, gate: FidelityGate
) -> FidelityReport:
    """Write the bf16 weights, score the eval sequences with them as the torch backend serves them, and keep the
    file only if it passes `gate`. bf16 rounds the same on every device, so the gate holds wherever it is served;
    where the CPU has no bf16 units it runs emulated (slowly), here and when served."""
    target = save_bf16(model, staging)
    scores = TorchScorer(load_bf16(target, model.spec), builder, torch.device("cpu")).score_ids(held_out.sequences)
    return gated_file(target, "bf16", held_out, scores, gate)


def gated_file(target: Path, label: str, held_out: HeldOut, scores: np.ndarray, gate: FidelityGate) -> FidelityReport:
    """The `target` file's scores judged against fp32's by `gate`: the file is deleted when it fails."""
    report = fidelity(held_out.groups, held_out.fp32_scores, scores, gate)
    print(
        f"{label}: accuracy {report.accuracy:.4f} (fp32 {report.fp32_accuracy:.4f}), spearman {report.spearman}, "
        f"pair order agreement {report.pairwise_agreement:.4f} over {report.pairs} pairs",
        flush=True,
    )
    if report.reason:
        target.unlink()
        print(f"{label} refused: {report.reason}", flush=True)
    else:
        report.file = target.name
    return report


def fidelity(
    groups: list[PreferenceGroup], fp32_scores: np.ndarray, scores: np.ndarray, gate: FidelityGate
) -> FidelityReport:
    """Reduced-precision scores (one per eval response) against fp32's, judged by `gate`: `reason` says why it
    failed, else None. `file` is left for the caller to name."""
    fp32, reduced = pairs_from_scores(groups, fp32_scores), pairs_from_scores(groups, scores)
    reference, margin = fp32.chosen - fp32.rejected, reduced.chosen - reduced.rejected
    accuracy, fp32_accuracy = float((margin > 0).mean()), float((reference > 0).mean())
    correlation = spearman(fp32_scores, scores)
    failed = []
    if abs(accuracy - fp32_accuracy) > gate.max_accuracy_change + 1e-12:  # 0.45 - 0.44 is 0.0100000000000001
        failed.append(f"accuracy {accuracy:.4f} is over {gate.max_accuracy_change} from fp32's {fp32_accuracy:.4f}")
    if not correlation >= gate.min_spearman:  # NaN (constant scores) fails too
        failed.append(f"spearman with fp32 {correlation:.4f} < {gate.min_spearman}")
    return FidelityReport(
        file=None,
        accuracy=accuracy,
        fp32_accuracy=fp32_accuracy,
        spearman=None if math.isnan(correlation) else correlation,
        pairwise_agreement=float((np.sign(margin) == np.sign(reference)).mean()),
        max_accuracy_change=gate.max_accuracy_change,
        min_spearman=gate.min_spearman,
        pairs=len(reference),
        reason="; ".join(failed) or None,
    )
