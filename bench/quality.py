"""TRL's RewardTrainer against `arbiter train`, side by side, in one run.

The same backbone (all-MiniLM-L6-v2), the same shared preference files, the same train / held-out split (the
default bundle's: a tenth of the prompts by hash, `eval_fraction` 0.1), the same number of optimizer steps, and the
same evaluation code: every trained model becomes a bundle (Arbiter's by `export_bundle`, TRL's by `arbiter
import`, as a user would serve it) and is scored on the held-out groups by arbiter.training.evaluate.

    python bench/quality.py [--steps N] [--only arbiter trl-defaults trl-best] [--out bench/results/quality]

Systems:
- arbiter: configs/default.yaml, the recipe `make run` builds.
- trl-defaults: RewardConfig's defaults, except max_length 512 (TRL's 1024 is past MiniLM's 512 positions) and
  fp32 (TRL turns bf16 on by default; Arbiter trains in fp32 on the CPU).
- trl-best: the best TRL configuration measured on these files (issue 16): lr 2e-5, max length 256, batch 16,
  no gradient checkpointing.

TRL sees the prompt rendered as Arbiter renders it for a model without a chat template (docs/bundle.md's plain
rendering), so both train on the same text. TRL drops pairs longer than its max_length (its rule); Arbiter cuts
them. Prints and writes quality.md and quality.json: accuracy per file with its 95% interval, ECE, the share of
"longer response wins" by the labels and by the model, and wall time (data preparation and training; export or
import is timed apart).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from arbiter import weights
from arbiter.bundle import load_bundle
from arbiter.bundle.manifest import Evaluation
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.render import render_plain
from arbiter.data.load import load_source
from arbiter.data.schema import PreferenceGroup
from arbiter.data.sources import SourceSpec
from arbiter.text_table import text_table
from arbiter.training.config import TrainConfig
from arbiter.training.evaluate import evaluation_section, score_pairs
from arbiter.training.export import export_bundle
from arbiter.training.importing.importer import import_model
from arbiter.training.split import is_eval
from arbiter.training.train import train

ROOT = Path(__file__).resolve().parents[1]
FILES = ("hh_rlhf_harmless", "finegrained_rlhf_qa", "pandalm")
HELD_OUT = 0.1
TRL_BEST = {
    "learning_rate": 2e-5,
    "max_length": 256,
    "per_device_train_batch_size": 16,
    "gradient_checkpointing": False,
}


def split(data: Path) -> tuple[list[PreferenceGroup], list[PreferenceGroup]]:
    train_groups, held_out = [], []
    for name in FILES:
        groups, _ = load_source(SourceSpec(path=str(data / f"{name}.jsonl")))
        for g in groups:
            (held_out if is_eval(g, HELD_OUT) else train_groups).append(g)
    return train_groups, held_out


def run_arbiter(data: Path, steps: int | None, out: Path) -> tuple[Path, int, float, float]:
    """The default recipe (with `steps`, that many optimizer steps instead of its own count): bundle, steps taken,
    training seconds, export seconds."""
    raw = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    sources = [SourceSpec(path=str(data / f"{name}.jsonl")) for name in FILES]
    overrides = {"max_steps": steps} if steps else {}
    config = TrainConfig.model_validate(
        {**raw, **overrides, "data": sources, "eval_fraction": HELD_OUT, "out": out / "run"}
    )
    started = time.perf_counter()
    run = train(config)
    trained = time.perf_counter() - started
    taken = int(json.loads((run / "train_summary.json").read_text())["steps"])
    started = time.perf_counter()
    bundle = export_bundle(run / "checkpoint", out / "bundle", name="arbiter", int8=False, bf16=False).path
    return bundle, taken, trained, time.perf_counter() - started


def run_trl(
    groups: list[PreferenceGroup], steps: int, overrides: dict[str, Any], out: Path
) -> tuple[Path, float, float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    started = time.perf_counter()
    base = weights.resolve("sentence-transformers/all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.eos_token = tokenizer.sep_token  # TRL ends plain texts with eos; BERT's WordPiece has none but [SEP]
    rows: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    for g in groups:
        for c in g.comparisons:
            rows["prompt"].append(render_plain(g.prompt))
            rows["chosen"].append(" " + g.responses[c.winner])
            rows["rejected"].append(" " + g.responses[c.loser])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    settings = {"max_length": 512, **overrides}
    args = RewardConfig(
        output_dir=str(out / "trainer"),
        max_steps=steps,
        bf16=False,
        use_cpu=True,
        seed=0,
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        **settings,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out / "model"))
    trained = time.perf_counter() - started
    started = time.perf_counter()
    bundle = import_model(
        str(out / "model"), out / "bundle", name=out.name, max_length=settings["max_length"], int8=False
    ).path
    return bundle, trained, time.perf_counter() - started


def evaluate(bundle: Path, held_out: list[PreferenceGroup]) -> Evaluation:
    scorer = OnnxRewardModel.from_bundle(load_bundle(bundle))
    return evaluation_section(score_pairs(held_out, scorer), "the held-out tenth of each shared file")


def table(results: dict[str, dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [
        ("system", "file", "pairs", "accuracy", "95% interval", "longer wins: labels / model", "ECE", "train s")
    ]
    for name, r in results.items():
        e = Evaluation.model_validate(r["evaluation"])
        for source, s in [*e.by_source.items(), ("ALL", e.overall)]:
            shares = f"{_pct(s.labels_prefer_longer)} / {_pct(s.model_prefers_longer)}"
            ece = f"{e.ece:.3f}" if source == "ALL" and e.ece is not None else ""
            rows.append(
                (
                    name,
                    source,
                    str(s.pairs),
                    f"{s.accuracy:.3f}",
                    f"[{s.accuracy_low:.3f}, {s.accuracy_high:.3f}]",
                    shares,
                    ece,
                    f"{r['train_s']:.0f}" if source == "ALL" else "",
                )
            )
    return text_table(rows)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "preferences")
    parser.add_argument(
        "--steps", type=int, help="optimizer steps of every system (default: what the default recipe takes)"
    )
    parser.add_argument("--only", nargs="*", choices=["arbiter", "trl-defaults", "trl-best"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality")
    args = parser.parse_args()
    chosen = args.only or ["arbiter", "trl-defaults", "trl-best"]
    if args.steps is None and "arbiter" not in chosen:
        parser.error("without arbiter's run, give --steps")
    train_groups, held_out = split(args.data)
    print(f"train: {len(train_groups)} groups, held out: {len(held_out)} groups")
    results: dict[str, dict[str, Any]] = {}

    def record(name: str, bundle: Path, steps: int, train_s: float, convert_s: float) -> None:
        evaluation = evaluate(bundle, held_out)
        results[name] = {
            "steps": steps,
            "train_s": train_s,
            "bundle_s": convert_s,
            "evaluation": evaluation.model_dump(),
        }
        print(table({name: results[name]}), flush=True)

    steps = args.steps
    if "arbiter" in chosen:  # first: the other systems take as many optimizer steps as it did
        print("== arbiter", flush=True)
        bundle, steps, train_s, convert_s = run_arbiter(args.data, args.steps, args.out / "arbiter")
        record("arbiter", bundle, steps, train_s, convert_s)
    assert steps is not None
    for name, overrides in (("trl-defaults", {}), ("trl-best", TRL_BEST)):
        if name in chosen:
            print(f"== {name}: {steps} steps", flush=True)
            bundle, train_s, convert_s = run_trl(train_groups, steps, overrides, args.out / name)
            record(name, bundle, steps, train_s, convert_s)
    args.out.mkdir(parents=True, exist_ok=True)
    report = table(results)
    (args.out / "quality.json").write_text(json.dumps(results, indent=2))
    (args.out / "quality.md").write_text(f"{steps} optimizer steps each, held-out tenth of each file\n\n{report}\n")
    print(report)


if __name__ == "__main__":
    main()
