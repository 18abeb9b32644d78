"""What export checks and records for a process reward model: ONNX against torch at every step token of the
held-out solutions, and the step evaluation of the ONNX file itself (step_eval.json, the manifest's summary)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from arbiter.bundle.manifest import Parity, StepEvaluation
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.render import InputBuilder
from arbiter.data.sources import SourceSpec
from arbiter.data.steps import load_stepwise
from arbiter.training.model import RewardModel
from arbiter.training.step_metrics import StepMetrics, step_metrics
from arbiter.training.steps import encode_steps, step_logit_rows


def check_steps(
    model: RewardModel, builder: InputBuilder, onnx: OnnxRewardModel, eval_path: Path, parity_items: int,
    tolerance: float,
) -> tuple[Parity, StepMetrics]:  # fmt: skip
    """Parity on the first `parity_items` held-out solutions (every step of each; infinite when the two read different
    steps), then the step metrics of the ONNX file on all of them. Export judges the parity against `tolerance`."""
    assert model.spec.steps is not None, "a process reward model"
    examples = load_stepwise(SourceSpec(path=str(eval_path)))[0] if eval_path.is_file() else []
    items = encode_steps(examples, builder, model.spec.steps, Counter())
    if not items:
        raise ValueError(f"no stepwise evaluation data at {eval_path}: give --eval-data (TRL stepwise rows)")
    logits = onnx.step_logits([item.ids[0] for item in items])
    reference = step_logit_rows(model, items[:parity_items], torch.device("cpu"))
    pairs = list(zip(reference, logits, strict=False))
    same_steps = all(len(a) == len(b) for a, b in pairs)
    diff = float(max(np.abs(a - b).max() for a, b in pairs)) if same_steps else float("inf")
    parity = Parity(max_abs_diff=diff, items=len(reference), tolerance=tolerance)
    return parity, step_metrics([i.example for i in items], [1 / (1 + np.exp(-row)) for row in logits])


def step_evaluation(m: StepMetrics, data: str) -> StepEvaluation:
    return StepEvaluation(
        data=data,
        solutions=m["solutions"],
        steps=m["steps"],
        wrong_steps=m["wrong_steps"],
        step_auc=m["step_auc"]["auc"],
        step_auc_low=m["step_auc"]["low"],
        step_auc_high=m["step_auc"]["high"],
        position_auc=m["position_auc"]["auc"],
        within_position_auc=m["within_position_auc"]["auc"],
        step_accuracy=m["step_accuracy"]["accuracy"],
        first_wrong_f1=m["first_wrong"]["f1"],
    )
