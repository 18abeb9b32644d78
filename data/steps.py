"""Stepwise supervision, what process reward models learn from: a prompt, a solution cut into steps, one label per
step (True: the step is right).

Shapes:
- TRL's stepwise supervision: {prompt, completions: [step, ...], labels: [bool, ...]} (labels may also be 0/1);
  Math-Shepherd and PRM800K as TRL republishes them (trl-lib/math_shepherd, trl-lib/prm800k) have it.
- GSM8K with graded model solutions (openai/grade-school-math's example_model_solutions, the shared
  gsm8k_model_solutions.jsonl): {question, reference_solution, solutions: [{solution, is_correct}, ...]}; each
  solution becomes one example, its steps labelled from its calculator annotations (arbiter.data.arithmetic_steps).
Optional on all: dataset (overrides the source's name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from arbiter.bundle.render import Prompt
from arbiter.data.arithmetic_steps import gsm8k_solutions, label_solutions
from arbiter.data.load import SourceReport, load_examples
from arbiter.data.schema import prompt_key
from arbiter.data.shapes import BadRow, parse_prompt
from arbiter.data.sources import SourceSpec


@dataclass(frozen=True)
class StepwiseExample:
    prompt: Prompt
    steps: tuple[str, ...]
    labels: tuple[bool, ...]
    source: str

    @property
    def prompt_key(self) -> str:
        return prompt_key(self.prompt)

    @property
    def first_wrong(self) -> int | None:
        """The index of the first wrong step, or None when every step is right."""
        return next((i for i, right in enumerate(self.labels) if not right), None)

    def to_row(self) -> dict[str, object]:
        """TRL's stepwise-supervision row, which `arbiter train --objective prm` reads back."""
        return {"prompt": self.prompt, "completions": list(self.steps), "labels": list(self.labels),
                "dataset": self.source}  # fmt: skip


def load_stepwise(spec: SourceSpec) -> tuple[list[StepwiseExample], SourceReport]:
    return load_examples(spec, parse_stepwise_row, lambda e: len(e.steps))


def parse_stepwise_row(row: Mapping[str, object], source: str) -> tuple[list[StepwiseExample], list[str]]:
    if isinstance(dataset := row.get("dataset"), str):
        source = dataset
    if row.get("solutions") is not None and row.get("question") is not None:
        return _gsm8k(row, source)
    steps, labels = row.get("completions"), row.get("labels")
    if steps is None or labels is None or row.get("prompt") is None:
        missing = [k for k in ("prompt", "completions", "labels") if row.get(k) is None]
        raise BadRow("missing_field", ", ".join(missing))
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise BadRow("bad_type", "completions must be a list of step texts")
    if not isinstance(labels, list) or not all(isinstance(v, bool) or v in (0, 1) for v in labels):
        raise BadRow("bad_label", "labels must be a list of booleans (or 0/1)")
    if not steps:
        raise BadRow("no_steps")
    if len(steps) != len(labels):
        raise BadRow("labels_mismatch", f"{len(steps)} steps, {len(labels)} labels")
    if any(not s.strip() for s in steps):
        raise BadRow("empty_step")
    example = StepwiseExample(parse_prompt(row["prompt"]), tuple(steps), tuple(bool(v) for v in labels), source)
    return [example], []


def _gsm8k(row: Mapping[str, object], source: str) -> tuple[list[StepwiseExample], list[str]]:
    question, reference = row["question"], row.get("reference_solution")
    if not isinstance(question, str) or not question.strip():
        raise BadRow("empty_prompt")
    solutions = gsm8k_solutions(row)
    if not solutions:
        raise BadRow("bad_type", "solutions must be a list of {solution, is_correct} objects")
    labelled, dropped = label_solutions(question, reference if isinstance(reference, str) else None, solutions)
    return [StepwiseExample(question, steps, labels, source) for steps, labels in labelled], dropped
