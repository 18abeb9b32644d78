"""Where int8 loses fidelity: the export's fidelity gate applied to dynamic int8 files that quantize only part of a
bundle's encoder, or that smooth it first, on this machine's CPU (ONNX Runtime's integer kernels differ by
instruction set: AVX2 without VNNI multiplies u8 by s8 in 16-bit sums that can saturate, AVX-512 VNNI does not).

    python bench/int8_sensitivity.py --bundle bundles/default --data runs/default/eval.jsonl

Each row quantizes one kind of matrix product (attention output, feed-forward in, feed-forward out; the query/key/
value product when the graph is not fused, since ONNX Runtime's dynamic quantization leaves its fused Attention
node in fp32) in every block, or all of them with the export's settings and variants of them, and reports held-out
accuracy against fp32's, the Spearman correlation of scores, the order agreement of pairs and the time the held-out
sequences take against fp32's. The SmoothQuant rows (Xiao et al., 2023) move each product's per-channel activation
range into its weights before quantizing, x W = (x / s)(s W) with s = max|x|^a / max|W|^(1 - a), the ranges
measured on the training side of --calibration (the held-out prompts are dropped), so the float graph is unchanged.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from arbiter.bundle.load import load_bundle
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.render import InputBuilder, pad_batch
from arbiter.data.load import load_source
from arbiter.data.schema import PreferenceGroup
from arbiter.data.sources import SourceSpec
from arbiter.text_table import text_table
from arbiter.training.batching import encode_groups
from arbiter.training.export import DEFAULT_GATE, eval_groups, fidelity

ROOT = Path(__file__).resolve().parents[1]
HEADER = ["int8", "accuracy", "vs fp32", "spearman", "pair order", "s", "x fp32", "gate"]
CALIBRATION_GROUPS = 120  # per file: 720 sequences bound each channel's range well enough to judge the method


def products(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """The names of the encoder's MatMul nodes with constant weights, by kind, told apart by their weights' shapes
    (so BERT-style encoders only): hidden x 4 hidden feeds forward in, 4 hidden x hidden out, and the square ones
    are query, key, value and attention output in turn, or attention output alone once the graph fuses Attention."""
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    kinds: dict[str, list[str]] = {"qkv": [], "attention_out": [], "ffn_in": [], "ffn_out": []}
    fused = any(node.op_type == "Attention" for node in graph.node)
    square = 0
    for node in graph.node:
        shape = shapes.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if not shape or len(shape) != 2:
            continue
        rows, cols = shape
        if rows != cols:
            kinds["ffn_in" if cols > rows else "ffn_out"].append(node.name)
        elif fused or square % 4 == 3:
            kinds["attention_out"].append(node.name)
            square += 1
        else:
            kinds["qkv"].append(node.name)
            square += 1
    return {kind: names for kind, names in kinds.items() if names}


def calibration_sequences(paths: list[Path], held_out: list[PreferenceGroup], builder: InputBuilder) -> list[list[int]]:
    """Training-side texts: CALIBRATION_GROUPS groups of each file whose prompt the held-out split does not have."""
    held = {g.prompt_key for g in held_out}
    sequences = []
    for path in paths:
        groups, _ = load_source(SourceSpec(path=str(path)))
        kept = [g for g in groups if g.prompt_key not in held][:CALIBRATION_GROUPS]
        sequences += [ids for item in encode_groups(kept, builder) for ids in item.ids]
    return sequences


def channel_ranges(
    source: Path, inputs: list[str], sequences: list[list[int]], pad_id: int, side: str
) -> dict[str, np.ndarray]:
    """max |x| per channel of each named tensor, over the real tokens of `sequences`."""
    probe = onnx.load(str(source))
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]
    ranges: dict[str, np.ndarray] = {}
    for start in range(0, len(sequences), 16):
        ids, mask = pad_batch(sequences[start : start + 16], pad_id, side)
        by_name = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
        outputs = session.run(inputs, {name: by_name[name] for name in feeds})
        for name, x in zip(inputs, outputs, strict=True):
            real = x[mask.astype(bool)] if x.ndim == 3 else x.reshape(-1, x.shape[-1])
            peak = np.abs(real).max(0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def smoothed(source: Path, ranges: dict[str, np.ndarray], alpha: float) -> onnx.ModelProto:
    """The same float function with every constant-weight MatMul's input divided by s (a Mul node) and its weight's
    rows multiplied by s, so int8's one activation scale per tensor meets flatter channels."""
    model = onnx.load(str(source))
    weights = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and node.input[0] in ranges:
            w = numpy_helper.to_array(weights[node.input[1]])
            s = ranges[node.input[0]] ** alpha / np.maximum(np.abs(w).max(1), 1e-8) ** (1 - alpha)
            s = np.clip(s, 1e-5, None).astype(np.float32)
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], node.input[1]))
            scale, divided = f"{node.name}_smooth_scale", f"{node.input[0]}_smoothed_for_{node.name}"
            model.graph.initializer.append(numpy_helper.from_array(1 / s, scale))
            nodes.append(helper.make_node("Mul", [node.input[0], scale], [divided], name=f"{node.name}_smooth"))
            node.input[0] = divided
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    parser.add_argument("--data", type=Path, default=Path("runs/default/eval.jsonl"), help="the held-out split")
    parser.add_argument(
        "--calibration",
        type=Path,
        action="append",
        help="files whose training side measures the SmoothQuant ranges (default: ../shared/data/preferences/*)",
    )
    parser.add_argument("--alpha", type=float, action="append", help="SmoothQuant's a (default: 0.5 and 0.75)")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    spec, builder = bundle.manifest.model, bundle.input_builder()
    groups = eval_groups(args.data)
    sequences = [ids for item in encode_groups(groups, builder) for ids in item.ids]
    source = bundle.path / "model.onnx"
    graph = onnx.load(str(source), load_external_data=False).graph
    kinds = products(graph)

    def timed(path: Path) -> tuple[np.ndarray, float]:
        model = OnnxRewardModel(path, spec, builder)
        model.score_ids(sequences[:64])  # allocation and the kernels' first runs stay out of the time
        started = time.perf_counter()
        return model.score_ids(sequences), time.perf_counter() - started

    fp32, fp32_seconds = timed(source)
    print(f"{len(groups)} groups, {len(sequences)} sequences; fp32 scored in {fp32_seconds:.1f} s")
    print({k: len(v) for k, v in kinds.items()})

    export: dict[str, Any] = {"weight_type": QuantType.QInt8, "per_channel": True}  # what training/export.py writes
    matmuls: dict[str, Any] = export | {"op_types_to_quantize": ["MatMul"]}
    variants: dict[str, tuple[Path | onnx.ModelProto, dict[str, Any]]] = {
        "all (the export's settings)": (source, export),
        "products only (embedding lookups in fp32)": (source, matmuls),
        "all, reduce_range": (source, export | {"reduce_range": True}),
        "all, u8 weights": (source, export | {"weight_type": QuantType.QUInt8}),
        **{f"only {kind}": (source, export | {"nodes_to_quantize": names}) for kind, names in kinds.items()},
    }
    calibration = calibration_sequences(
        args.calibration or sorted((ROOT.parent / "shared" / "data" / "preferences").glob("*.jsonl")), groups, builder
    )
    inputs = [n.input[0] for n in graph.node if n.name in {name for names in kinds.values() for name in names}]
    ranges = channel_ranges(source, inputs, calibration, spec.pad_token_id, spec.padding_side)
    print(f"SmoothQuant ranges from {len(calibration)} training-side sequences")
    for alpha in args.alpha or [0.5, 0.75]:
        variants[f"products, SmoothQuant a={alpha}"] = (smoothed(source, ranges, alpha), matmuls)

    rows: list[list[str]] = []
    report = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, (model, options) in variants.items():
            start = model if isinstance(model, Path) else Path(tmp) / "model.onnx"
            if isinstance(model, onnx.ModelProto):
                onnx.save(model, str(start))
                drift = float(np.abs(timed(start)[0] - fp32).max())
                print(f"{label}: the smoothed float graph moves scores by at most {drift:.1e}")
            target = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(start), str(target), **options)
            scores, seconds = timed(target)
            report = fidelity(groups, fp32, scores, DEFAULT_GATE)
            rows.append(
                [
                    label,
                    f"{report.accuracy:.4f}",
                    f"{report.accuracy - report.fp32_accuracy:+.4f}",
                    f"{report.spearman:.4f}",
                    f"{report.pairwise_agreement:.3f}",
                    f"{seconds:.1f}",
                    f"{fp32_seconds / seconds:.2f}",
                    "pass" if report.reason is None else "fail",
                ]
            )
            print(text_table([HEADER, rows[-1]]), flush=True)
    assert report is not None
    print(f"\nfp32 accuracy {report.fp32_accuracy:.4f} over {report.pairs} pairs; the gate: accuracy within "
          f"{DEFAULT_GATE.max_accuracy_change} of it and spearman >= {DEFAULT_GATE.min_spearman}")  # fmt: skip
    print(text_table([HEADER, *rows]))


if __name__ == "__main__":
    main()
