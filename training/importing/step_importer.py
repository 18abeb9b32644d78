"""`arbiter import --step-token`: a process reward model trained elsewhere (step_models.py) in, a PRM bundle out
(format 1.4), proven to read every step as the original does: the bundle's step logits (ONNX, batched and padded as
the server runs them) must match the original's own forward on each text alone, at every step token, within the
tolerance. With stepwise --eval-data the bundle also carries the step evaluation of the ONNX file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from arbiter.bundle.load import Bundle
from arbiter.bundle.manifest import Parity, StepReading
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.render import InputBuilder
from arbiter.data.sources import SourceSpec
from arbiter.data.steps import StepwiseExample, load_stepwise
from arbiter.training.evaluate import write_json
from arbiter.training.export import ExportError, export_onnx, new_manifest, seal, staged
from arbiter.training.importing.importer import model_spec, recorded_source
from arbiter.training.importing.samples import STEP_SAMPLES
from arbiter.training.importing.step_models import StepReference, load_step_model
from arbiter.training.step_bundle import step_evaluation
from arbiter.training.step_metrics import format_step_metrics, step_metrics
from arbiter.training.steps import EncodedSteps, encode_steps

PARITY_BATCH = 4  # small batches of mixed lengths, so that padding is part of what parity checks


def import_step_model(
    checkpoint: str,
    out: Path,
    step_token: str,
    good_token: str = "+",
    bad_token: str = "-",
    name: str | None = None,
    model_version: str | None = None,
    max_length: int | None = None,
    chat_template: str = "auto",
    eval_data: Path | None = None,
    parity_items: int = 64,
    tolerance: float = 1e-4,
    fuse: bool = True,
) -> Bundle:
    imported = load_step_model(checkpoint, good_token, bad_token)
    described = imported.described
    base = model_spec(described, max_length, chat_template)
    builder = InputBuilder(described.tokenizer.backend_tokenizer, base.rendering, base.max_length)
    reading = StepReading(token=step_token, token_id=_step_token_id(builder, step_token))
    spec = base.model_copy(update={"steps": reading})
    if eval_data:
        examples, _ = load_stepwise(SourceSpec(path=str(eval_data)))
        if not examples:
            raise ValueError(f"{eval_data}: no stepwise rows (prompt, completions, labels) to evaluate on")
    else:
        examples = [StepwiseExample(p, tuple(s), (True,) * len(s), "samples") for p, s in STEP_SAMPLES]
    items = encode_steps(examples, builder, reading, Counter())
    whole = [i for i in items if len(i.positions) == len(i.example.steps)]
    if not whole or any(len(i.positions) > len(i.example.steps) for i in items):
        raise ValueError(f"{step_token!r} is not read as one token {reading.token_id} at the end of each step of this "
                         "tokenizer's texts (it merges with its neighbours); give the step token the model was "
                         "trained with")  # fmt: skip

    def write(staging: Path) -> None:
        described.tokenizer.save_pretrained(staging)
        builder.tokenizer.save(str(staging / "tokenizer.json"))
        graph = export_onnx(imported.model, staging / "model.onnx", ["token_scores"], fuse)
        onnx = OnnxRewardModel(staging / "model.onnx", spec, builder, batch_size=PARITY_BATCH)
        logits = onnx.step_logits([i.ids[0] for i in items])
        parity = _parity(items[:parity_items], logits, imported.reference, tolerance)
        print(f"parity with the original model: max |diff| {parity.max_abs_diff:.2e} over {parity.items} texts")
        evaluation, table = None, None
        if eval_data:
            result = step_metrics([i.example for i in items], [1 / (1 + np.exp(-row)) for row in logits])
            table = format_step_metrics(result)
            print(table, flush=True)
            write_json(result, staging / "step_eval.json")
            evaluation = step_evaluation(result, str(eval_data))
        manifest = new_manifest(
            name or Path(described.source.checkpoint).name,
            model_version,
            model=spec,
            parity=parity,
            graph=graph,
            step_evaluation=evaluation,
            source=recorded_source(described.source),
        )
        seal(staging, manifest, None, table)

    return staged(Path(out), write)


def _step_token_id(builder: InputBuilder, token: str) -> int:
    ids = builder.tokenizer.encode(token, add_special_tokens=False).ids
    if len(ids) != 1:
        raise ValueError(f"--step-token {token!r} is {len(ids)} tokens of this tokenizer ({ids}); it must be one")
    return int(ids[0])


def _parity(items: list[EncodedSteps], logits: list[np.ndarray], reference: StepReference, tolerance: float) -> Parity:
    """The bundle's step logits against the original's own forward on each text alone, at its step tokens."""
    diff = 0.0
    for item, got in zip(items, logits, strict=False):
        expected = reference(item.ids[0])[item.positions]
        if len(expected) != len(got):
            raise ExportError(f"the bundle reads {len(got)} steps where the original reads {len(expected)}")
        diff = max(diff, float(np.abs(got - expected).max()))
    if diff > tolerance:
        raise ExportError(f"the bundle's step logits differ from the original model's by {diff:.2e} "
                          f"(> {tolerance:.0e}); bundle not written")  # fmt: skip
    return Parity(max_abs_diff=diff, items=len(items), tolerance=tolerance)
