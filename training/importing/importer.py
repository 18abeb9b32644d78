"""`arbiter import`: a reward model trained elsewhere in, a bundle out, proven to score as the original does.

The bundle is the same format `arbiter export` writes (docs/bundle.md). Before the manifest is written, the
bundle's scores (ONNX, batched and padded as the server runs them) must match the original model's own forward on
each text alone, for every objective, within the tolerance; the largest difference is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from arbiter import weights
from arbiter.bundle.load import Bundle
from arbiter.bundle.manifest import Engine, ModelSpec, Normalization, Objectives, Parity, Source
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.render import InputBuilder, pad_batch, score_by_length
from arbiter.data.schema import PreferenceGroup
from arbiter.training.evaluate import Metrics, evaluation_section, format_table, metrics, pairs_from_scores, to_json
from arbiter.training.export import (
    DEFAULT_GATE,
    ExportError,
    FidelityGate,
    HeldOut,
    eval_groups,
    export_onnx,
    int8_file,
    new_manifest,
    seal,
    staged,
)
from arbiter.training.importing.checkpoints import (
    Described,
    ImportedCheckpoint,
    describe,
    load_imported,
    objective_index,
)
from arbiter.training.importing.samples import SAMPLES
from arbiter.training.model import rendering_for

# Without --max-length, the model's own limit, at most this: long-context decoders allow 32k tokens and more,
# which a reward server on CPUs should not take by default.
DEFAULT_MAX_LENGTH = 4096
PARITY_BATCH = 4  # small batches of mixed lengths, so that padding is part of what parity checks


def import_model(
    checkpoint: str,
    out: Path,
    name: str | None = None,
    model_version: str | None = None,
    objective: str | None = None,
    max_length: int | None = None,
    chat_template: str = "auto",
    eval_data: Path | None = None,
    runtime: Literal["onnx", "torch"] = "onnx",
    int8: bool = True,
    int8_gate: FidelityGate = DEFAULT_GATE,
    parity_items: int = 64,
    tolerance: float = 1e-4,
    fuse: bool = True,
) -> Bundle:
    imported = load_imported(checkpoint, objective)
    spec = model_spec(imported.described, max_length, chat_template)
    builder = InputBuilder(imported.described.tokenizer.backend_tokenizer, spec.rendering, spec.max_length)
    groups = eval_groups(eval_data) if eval_data else []
    if eval_data and not groups:
        raise ValueError(f"{eval_data}: no preference groups to evaluate on")
    texts = [(g.prompt, r) for g in groups for r in g.responses] if groups else list(SAMPLES)
    sequences = [builder.encode(prompt, response).ids for prompt, response in texts]

    def write(staging: Path) -> None:
        _write(
            staging,
            imported,
            spec,
            builder,
            groups,
            sequences,
            name,
            model_version,
            runtime,
            int8,
            int8_gate,
            parity_items,
            tolerance,
            fuse,
        )

    return staged(Path(out), write)


def import_remote(
    checkpoint: str,
    out: Path,
    engine: Engine,
    name: str | None = None,
    model_version: str | None = None,
    objective: str | None = None,
    max_length: int | None = None,
    chat_template: str = "auto",
) -> Bundle:
    """A bundle for a model that an engine serves: the tokenizer, rendering and labels, read from the checkpoint's
    config and tokenizer alone (its weights stay with the engine). No parity: the engine does the scoring."""
    described = describe(checkpoint)
    labels = described.labels
    objectives = Objectives(names=labels, score=labels[objective_index(labels, objective)]) if len(labels) > 1 else None
    spec = model_spec(described, max_length, chat_template)
    builder = InputBuilder(described.tokenizer.backend_tokenizer, spec.rendering, spec.max_length)

    def write(staging: Path) -> None:
        described.tokenizer.save_pretrained(staging)
        builder.tokenizer.save(str(staging / "tokenizer.json"))
        manifest = new_manifest(
            name or Path(checkpoint).name,
            model_version,
            model=spec,
            objectives=objectives,
            source=recorded_source(described.source),
            runtime="remote",
            engine=engine,
        )
        seal(staging, manifest, None)

    return staged(Path(out), write)


def recorded_source(source: Source) -> Source:
    """Local paths made absolute, so that a server started elsewhere finds them; hub ids as given."""
    local = Path(source.checkpoint)
    checkpoint = str(local.resolve()) if local.exists() else source.checkpoint
    adapter = str(Path(source.adapter).resolve()) if source.adapter else None
    return source.model_copy(update={"checkpoint": checkpoint, "adapter": adapter})


def model_spec(described: Described, max_length: int | None, chat_template: str) -> ModelSpec:
    tokenizer, config = described.tokenizer, described.config.get_text_config()
    limits = [
        v
        for v in (tokenizer.model_max_length, getattr(config, "max_position_embeddings", None))
        if isinstance(v, int) and 8 < v < 1_000_000
    ]
    length = max_length or min([*limits, DEFAULT_MAX_LENGTH])
    pad = getattr(config, "pad_token_id", None)
    pad_id = pad if isinstance(pad, int) else tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(f"{described.source.checkpoint}: neither the config nor the tokenizer names a pad token")
    return ModelSpec(
        base_model=weights.canonical_name(described.source.checkpoint),
        architecture=described.architecture,
        model_type=str(described.config.model_type),
        pooling=described.pooling,
        max_length=length,
        padding_side="right" if described.architecture == "encoder" else "left",
        pad_token_id=pad_id,
        rendering=rendering_for(tokenizer, chat_template),
    )


def _write(
    staging: Path,
    imported: ImportedCheckpoint,
    spec: ModelSpec,
    builder: InputBuilder,
    groups: list[PreferenceGroup],
    sequences: list[list[int]],
    name: str | None,
    model_version: str | None,
    runtime: Literal["onnx", "torch"],
    int8: bool,
    int8_gate: FidelityGate,
    parity_items: int,
    tolerance: float,
    fuse: bool,
) -> None:
    tokenizer: PreTrainedTokenizerBase = imported.described.tokenizer
    tokenizer.save_pretrained(staging)
    builder.tokenizer.save(str(staging / "tokenizer.json"))  # the exact tokenizer the server will run
    labels = imported.described.labels
    objectives = Objectives(names=labels, score=labels[imported.model.score_index]) if len(labels) > 1 else None
    onnx: OnnxRewardModel | None = None
    graph = None
    if runtime == "onnx":
        graph = export_onnx(imported.model, staging / "model.onnx", ["score", "scores"], fuse)
        onnx = OnnxRewardModel(staging / "model.onnx", spec, builder, objectives=len(labels) if objectives else 0)
    parity = _parity(imported, spec, onnx, sequences[:parity_items], tolerance)
    print(f"parity with the original model: max |diff| {parity.max_abs_diff:.2e} over {parity.items} texts")

    result: Metrics | None = None
    pairs = None
    scores: np.ndarray | None = None
    normalization = None
    if imported.normalization:
        mean, std = imported.normalization
        normalization = Normalization(mean=mean, std=std, count=0, source="the checkpoint's config (normalize_reward)")
    if groups:
        scores = onnx.score_ids(sequences) if onnx else _torch_rows(imported, spec, sequences)[:, 0]
        pairs = pairs_from_scores(groups, scores)
        result = metrics(pairs)
        print(format_table(result), flush=True)
        (staging / "eval.json").write_text(to_json(result))
        if normalization is None:
            normalization = Normalization(
                mean=float(scores.mean()),
                std=float(scores.std()),
                count=len(scores),
                source="fp32 scores of every response in the eval data",
            )
    int8_report = None
    if int8 and onnx and scores is not None:  # the fp32 scores above are int8's reference
        int8_report = int8_file(staging, spec, builder, HeldOut(groups, sequences, scores), int8_gate)

    manifest = new_manifest(
        name or Path(imported.described.source.checkpoint).name,
        model_version,
        model=spec,
        parity=parity,
        graph=graph,
        int8=int8_report,
        normalization=normalization,
        eval_accuracy=float(result["accuracy"]) if result else None,
        evaluation=evaluation_section(pairs, "the eval data given at import") if pairs is not None else None,
        objectives=objectives,
        source=recorded_source(imported.described.source),
        runtime=runtime,
    )
    seal(staging, manifest, result)


def _parity(
    imported: ImportedCheckpoint,
    spec: ModelSpec,
    onnx: OnnxRewardModel | None,
    sequences: list[list[int]],
    tolerance: float,
) -> Parity:
    """The bundle's rows (score, then each objective when there are several) against the original's, text by text."""
    reference = np.stack([imported.reference(ids) for ids in sequences])
    expected = reference[:, [imported.model.score_index]]
    if len(imported.described.labels) > 1:
        expected = np.column_stack([expected, reference])
    got = score_by_length(sequences, PARITY_BATCH, onnx.run_rows) if onnx else _torch_rows(imported, spec, sequences)
    got = got[:, : expected.shape[1]]
    diff = float(np.abs(got - expected).max())
    if diff > tolerance:
        raise ExportError(
            f"the bundle's scores differ from the original model's by {diff:.2e} (> {tolerance:.0e}); "
            "bundle not written"
        )
    return Parity(max_abs_diff=diff, items=len(sequences), tolerance=tolerance)


@torch.no_grad()
def _torch_rows(imported: ImportedCheckpoint, spec: ModelSpec, sequences: list[list[int]]) -> np.ndarray:
    def run(batch: list[Sequence[int]]) -> np.ndarray:
        ids, mask = pad_batch(batch, spec.pad_token_id, spec.padding_side)
        score, logits = imported.model(torch.from_numpy(ids), torch.from_numpy(mask))
        return torch.column_stack([score, logits]).numpy()

    return score_by_length(sequences, PARITY_BATCH, run)
