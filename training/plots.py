"""The PNG plots of a run: training curves, the reliability diagram, chosen-vs-rejected score histograms, and
accuracy by source and subset with intervals."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from arbiter.training.evaluate import Metrics, ReliabilityBin, ScoredPairs


def training_curves(metrics_file: Path, out: Path) -> None:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (mean since the last point)")
    ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train (mean since the last point)")
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval")
        ax_acc.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-", label="eval")
    ax_acc.axhline(0.5, color="grey", lw=0.8, ls="--")
    for ax, title in ((ax_loss, "Bradley-Terry loss"), (ax_acc, "pairwise accuracy")):
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def reliability_diagram(reliability: Sequence[ReliabilityBin], ece: float, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1], [0.5, 1], color="grey", ls="--", label="perfect calibration")
    ax.plot([b["confidence"] for b in reliability], [b["accuracy"] for b in reliability], "o-", label="model")
    for b in reliability:
        ax.annotate(
            str(b["count"]),
            (b["confidence"], b["accuracy"]),
            fontsize=7,
            xytext=(3, -9),
            textcoords="offset points",
        )
    ax.set_xlabel("confidence max(p, 1-p), p = sigmoid(r_c - r_r)")
    ax.set_ylabel("share of pairs ordered right")
    ax.set_title(f"Reliability (ECE {ece:.3f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def score_histograms(pairs: ScoredPairs, out: Path) -> None:
    fig, (ax_scores, ax_diff) = plt.subplots(1, 2, figsize=(11, 4))
    ax_scores.hist(pairs.chosen, bins=40, alpha=0.6, label="chosen")
    ax_scores.hist(pairs.rejected, bins=40, alpha=0.6, label="rejected")
    ax_scores.set_title("reward of chosen and rejected responses")
    ax_scores.legend()
    ax_diff.hist(pairs.chosen - pairs.rejected, bins=40, color="tab:green")
    ax_diff.axvline(0, color="black", lw=0.8)
    ax_diff.set_title("r_chosen - r_rejected (right of 0 = correct)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def accuracy_by_group(result: Metrics, out: Path) -> None:
    """Accuracy per source and per subset, then the length-controlled split, each with its 95% interval."""
    rows: list[tuple[str, float, float, float]] = []
    for prefix, table in (("", result["by_source"]), ("subset ", result.get("by_subset", {}))):
        rows += [(prefix + k, a["accuracy"], a["accuracy_low"], a["accuracy_high"]) for k, a in table.items()]
    split = result["length_controlled"]
    for name, part in (("chosen longer", split["chosen_longer"]), ("chosen shorter", split["chosen_shorter"])):
        if part["count"]:
            rows.append((name, part["accuracy"], part["accuracy_low"], part["accuracy_high"]))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    y = list(range(len(rows)))[::-1]
    accuracy = [r[1] for r in rows]
    errors = [[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]]
    ax.errorbar(accuracy, y, xerr=errors, fmt="o", capsize=3)
    ax.axvline(0.5, color="grey", ls="--")
    ax.set_yticks(y, [r[0] for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy with its bootstrap 95% interval (dashed: chance)")
    ax.set_title(f"Accuracy by source and subset (all: {result['accuracy']:.3f} over {result['pairs']} pairs)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
