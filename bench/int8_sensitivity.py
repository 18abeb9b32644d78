"""Where int8 loses fidelity: the export's fidelity gate applied to dynamic int8 files that quantize only part of a
bundle's encoder, on this machine's CPU (ONNX Runtime's integer kernels differ by instruction set: AVX2 without VNNI
multiplies u8 by s8 in 16-bit sums that can saturate, AVX-512 VNNI does not).

    python bench/int8_sensitivity.py --bundle bundles/default --data runs/default/eval.jsonl

Each row quantizes one kind of matrix product (query/key/value, attention output, feed-forward in, feed-forward
out) in every block, or all of them with the export's settings and variants of them, and reports held-out accuracy
against fp32's, the Spearman correlation of scores and the order agreement of pairs. The products are told apart by
their weights' shapes, so it reads BERT-style encoders (hidden x hidden four times a block, then hidden x 4 hidden and
4 hidden x hidden).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from arbiter.bundle.load import load_bundle
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.text_table import text_table
from arbiter.training.export import DEFAULT_GATE, eval_groups, fidelity

HEADER = ["int8", "accuracy", "vs fp32", "spearman", "pair order", "s", "gate"]


def products(model_file: Path) -> dict[str, list[str]]:
    """The names of the encoder's MatMul nodes with constant weights, by kind."""
    graph = onnx.load(str(model_file), load_external_data=False).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    kinds: dict[str, list[str]] = {"qkv": [], "attention_out": [], "ffn_in": [], "ffn_out": []}
    square = 0
    for node in graph.node:
        shape = shapes.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if not shape or len(shape) != 2:
            continue
        rows, cols = shape
        if rows == cols:
            kinds["qkv" if square % 4 < 3 else "attention_out"].append(node.name)
            square += 1
        else:
            kinds["ffn_in" if cols > rows else "ffn_out"].append(node.name)
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    parser.add_argument("--data", type=Path, default=Path("runs/default/eval.jsonl"), help="the held-out split")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    spec, builder = bundle.manifest.model, bundle.input_builder()
    groups = eval_groups(args.data)
    sequences = [e.ids for g in groups for e in builder.encode_many([g.prompt] * len(g.responses), g.responses)]
    source = bundle.path / "model.onnx"
    kinds = products(source)
    started = time.perf_counter()
    fp32 = OnnxRewardModel(source, spec, builder).score_ids(sequences)
    print(f"{len(groups)} groups, {len(sequences)} sequences; fp32 scored in {time.perf_counter() - started:.0f} s")
    print({k: len(v) for k, v in kinds.items()})

    export: dict[str, Any] = {"weight_type": QuantType.QInt8, "per_channel": True}  # what training/export.py writes
    variants: dict[str, dict[str, Any]] = {
        "all (the export's settings)": export,
        "all, reduce_range": export | {"reduce_range": True},
        "all, u8 weights": export | {"weight_type": QuantType.QUInt8},
        "all but ffn_out, u8 weights": export | {"weight_type": QuantType.QUInt8, "nodes_to_exclude": kinds["ffn_out"]},
        **{f"only {kind}": export | {"nodes_to_quantize": names} for kind, names in kinds.items()},
    }
    rows: list[list[str]] = []
    report = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in variants.items():
            target = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(source), str(target), **options)
            started = time.perf_counter()
            scores = OnnxRewardModel(target, spec, builder).score_ids(sequences)
            seconds = time.perf_counter() - started
            report = fidelity(groups, fp32, scores, DEFAULT_GATE)
            rows.append(
                [
                    label,
                    f"{report.accuracy:.4f}",
                    f"{report.accuracy - report.fp32_accuracy:+.4f}",
                    f"{report.spearman:.4f}",
                    f"{report.pairwise_agreement:.3f}",
                    f"{seconds:.0f}",
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
