"""The bundle's README.md: what the model is, how it was checked, and what it should not be used for."""

from __future__ import annotations

from arbiter.bundle.manifest import Evaluation, FidelityReport, Manifest, SourceEvaluation
from arbiter.training.evaluate import Metrics, format_table


def model_card(manifest: Manifest, eval_result: Metrics | None, step_table: str | None = None) -> str:
    """`step_table`: a process reward model's step evaluation, as format_step_metrics prints it."""
    spec = manifest.model
    int8_line, bf16_line = _fidelity_line(manifest.int8), _fidelity_line(manifest.bf16)
    parity, norm, source, objectives = manifest.parity, manifest.normalization, manifest.source, manifest.objectives
    origin = f"imported from `{source.checkpoint}` ({source.format})" if source else "trained"
    checked = {"onnx": "ONNX", "torch": "batched torch", "remote": "engine"}[manifest.runtime]
    engine = manifest.engine
    rows = [
        ("base model", f"`{spec.base_model}` ({spec.model_type}, {spec.architecture}), {origin}"),
        ("pooling", f"{spec.pooling} (positions from the attention mask)"),
        ("input", f"{spec.rendering.kind} rendering, at most {spec.max_length} tokens, prompt cut from the left"),
        ("score", "raw logit: higher is better; P(a over b) = sigmoid(score_a - score_b)"),
        ("objectives", f"{', '.join(objectives.names)}; the score is {objectives.score}" if objectives else "one"),
        ("normalization", f"mean {norm.mean:.4f}, std {norm.std:.4f} ({norm.source})" if norm else "none"),
        ("runtime", f"{manifest.runtime}" + (f": {engine.protocol} at {engine.url}" if engine else "")),
        (
            f"{checked} parity",
            f"max abs diff {parity.max_abs_diff:.2e} over {parity.items} items"
            if parity
            else "none: the engine scores",
        ),
        ("int8", int8_line),
        ("bf16", bf16_line),
    ]
    if spec.steps is not None:
        rows[1] = (
            "pooling",
            f"none: one logit per step, read at every `{spec.steps.token}` (id {spec.steps.token_id})",
        )
        rows[3] = ("score", "per step: the logit of P(step right); a solution's score reduces them (min by default)")
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    evaluation = _evaluation(manifest.evaluation) if manifest.evaluation else "Not evaluated (no preference data)."
    kind = "A scalar reward model for RLHF"
    if manifest.step_evaluation is not None:
        kind = "A process reward model (a score for every step of a solution)"
        evaluation = f"On {manifest.step_evaluation.data}:\n\n```\n{step_table or ''}\n```"
    if eval_result:
        evaluation += f"\n\n```\n{format_table(eval_result)}\n```"
    return f"""# {manifest.name} ({manifest.model_version})

{kind}, written by Arbiter {manifest.arbiter_version}.
Bundle format {manifest.format_version}: see Arbiter's docs/bundle.md.

| | |
|---|---|
{table}

## Held-out evaluation

{evaluation}

## Limits

- A reward model is a proxy for human preference, learned from the data it saw; policies optimized hard
  against it find its blind spots (reward hacking). Watch the KL to the reference policy and re-check with people.
- Scores are comparable within one model version only. Normalize with the statistics above before mixing models.
- Inputs longer than {spec.max_length} tokens lose the beginning of their prompt.
"""


def _evaluation(evaluation: Evaluation) -> str:
    """Per source: accuracy with its bootstrap 95% interval (resampling prompts), and how often the longer response
    wins."""
    lines = [
        f"On {evaluation.data}. The intervals resample prompts, each with all of its pairs.",
        "",
        "| source | pairs | prompts | accuracy (95% interval) | longer wins: labels | longer wins: model |",
        "|---|---|---|---|---|---|",
    ]
    rows: list[tuple[str, SourceEvaluation]] = [*evaluation.by_source.items(), ("all", evaluation.overall)]
    for name, r in rows:
        interval = f" ({r.accuracy_low:.3f} to {r.accuracy_high:.3f})" if r.accuracy_low is not None else ""
        prompts = "n/a" if r.prompts is None else r.prompts
        lines.append(
            f"| {name} | {r.pairs} | {prompts} | {r.accuracy:.3f}{interval} | {_share(r.labels_prefer_longer)} "
            f"| {_share(r.model_prefers_longer)} |"
        )
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _fidelity_line(report: FidelityReport | None) -> str:
    if report is None:
        return "not requested"
    if not report.file:
        return f"refused: {report.reason}"
    return (
        f"written; eval accuracy {report.accuracy:.3f} (fp32 {report.fp32_accuracy:.3f}), spearman with fp32 "
        f"{report.spearman:.4f}, same order as fp32 on {100 * report.pairwise_agreement:.1f}% of {report.pairs} pairs"
    )
