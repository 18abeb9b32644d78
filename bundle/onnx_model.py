"""Scoring with a bundle's ONNX file through ONNX Runtime. Never imports torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from arbiter.bundle.load import Bundle, BundleError
from arbiter.bundle.manifest import ModelSpec
from arbiter.bundle.render import InputBuilder, Prompt, pad_batch, score_by_length
from arbiter.bundle.steps import (
    DEFAULT_STEP_AGGREGATE,
    StepAggregate,
    read_steps,
    reduced_logit,
    split_steps,
    step_text,
)

PRECISION_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


class OnnxRewardModel:
    """One ONNX Runtime session over a reward model; scores are raw logits. A model with several objectives also
    gives `scores`, one column per objective (`run_rows`)."""

    device = "cpu"  # the CPU execution provider, the only one the session is given

    def __init__(
        self,
        model_file: Path,
        spec: ModelSpec,
        builder: InputBuilder,
        threads: int = 0,
        batch_size: int = 32,
        objectives: int = 0,
        spinning: bool = True,
        precision: str = "fp32",
    ) -> None:
        """`spinning`: whether idle threads busy-wait for the next batch (ONNX Runtime's default). Faster for one
        model alone; with several models on the same cores the spinning threads of one slow the others."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
            raise BundleError(f"{model_file}: not a usable ONNX model ({exc})") from exc
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        wanted = {"token_scores"} if spec.steps else {"score", "scores"} if objectives else {"score"}
        if inputs != {"input_ids", "attention_mask"} or not wanted <= outputs:
            # Caught here rather than on the first request, where it would be the server's error, not the bundle's.
            kind = "a process reward model" if spec.steps else "a reward model"
            raise BundleError(
                f"{model_file}: the graph takes {sorted(inputs)} and gives {sorted(outputs)}; "
                f"{kind} takes input_ids and attention_mask and gives {' and '.join(sorted(wanted))}"
            )
        self.spec, self.builder, self.batch_size, self.objectives = spec, builder, batch_size, objectives
        self.precision = precision  # which of PRECISION_FILES `model_file` is

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, precision: str = "fp32", threads: int = 0, spinning: bool = True
    ) -> OnnxRewardModel:
        file = PRECISION_FILES.get(precision)
        if file is None:
            raise BundleError(f"unknown precision {precision!r}; use one of {', '.join(PRECISION_FILES)}")
        if not bundle.has(file):
            raise BundleError(f"{bundle.path}: has no {file} (precision {precision})")
        objectives = bundle.manifest.objectives
        count = len(objectives.names) if objectives else 0
        builder = bundle.input_builder()
        return cls(
            bundle.file(file),
            bundle.manifest.model,
            builder,
            threads,
            objectives=count,
            spinning=spinning,
            precision=precision,
        )

    def run(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """[batch]: the scores; a process reward model's rows of step logits ([batch, max_length], see read_steps)."""
        ids, mask = pad_batch(sequences, self.spec.pad_token_id, self.spec.padding_side)
        if self.spec.steps is not None:
            (logits,) = self.session.run(["token_scores"], {"input_ids": ids, "attention_mask": mask})
            return read_steps(logits.astype(np.float64), ids, mask, self.spec.steps.token_id, self.spec.max_length)
        (scores,) = self.session.run(["score"], {"input_ids": ids, "attention_mask": mask})
        return scores.astype(np.float64)

    def step_logits(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """A process reward model's logit of P(right) for each step of each sequence, in order."""
        rows = score_by_length(sequences, self.batch_size, self.run)
        return [row[~np.isnan(row)] for row in rows]

    def run_rows(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """[batch, 1 + objectives]: the score, then each objective's output."""
        if not self.objectives:
            return self.run(sequences)[:, None]
        ids, mask = pad_batch(sequences, self.spec.pad_token_id, self.spec.padding_side)
        score, scores = self.session.run(["score", "scores"], {"input_ids": ids, "attention_mask": mask})
        return np.column_stack([score, scores]).astype(np.float64)

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        return score_by_length(sequences, self.batch_size, self.run)

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        if self.spec.steps is not None:
            return self.solution_scores(prompts, responses)
        return self.score_ids([e.ids for e in self.builder.encode_many(prompts, responses)])

    def solution_scores(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        separator: str | None = None,
        how: StepAggregate = DEFAULT_STEP_AGGREGATE,
    ) -> np.ndarray:
        """A process reward model's score of each response as a whole: its steps (split at `separator`, by default
        the step token) read in one pass, the logit of their aggregate `how`, as the server's default score."""
        assert self.spec.steps is not None, "a process reward model"
        token = self.spec.steps.token
        texts = [step_text(split_steps(r, separator or token), token) for r in responses]
        logits = self.step_logits([e.ids for e in self.builder.encode_many(prompts, texts)])
        if empty := [i for i, row in enumerate(logits) if not len(row)]:
            raise ValueError(f"response {empty[0]} has no step within the model's {self.spec.max_length} tokens "
                             "(its first step is too long)")  # fmt: skip
        return np.array([reduced_logit(row, how) for row in logits])
