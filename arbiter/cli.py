"""The `arbiter` command. Subcommands import their heavy dependencies only when they run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arbiter import __version__
from arbiter.annotation.cli import add_parsers as add_annotation_parsers
from arbiter.cli_options import add_model_flags, given_flags
from arbiter.service.access.cli import add_parsers as add_key_parsers

DESCRIPTION = """Arbiter: reward models for RLHF.

  arbiter train --data prefs.jsonl --out runs/rm --export bundles/rm   train, then write a bundle
  arbiter eval bundles/rm --data heldout.jsonl                        evaluate a bundle or checkpoint
  arbiter export runs/rm/checkpoint --out bundles/rm                  checkpoint -> bundle (ONNX)
  arbiter serve --bundles bundles/rm                                  serve it over HTTP
  arbiter label --pairs pairs.jsonl --out labels.jsonl               label pairs with the LLM judge (RLAIF)
  arbiter eval-judge --data prefs.jsonl                               measure the judge against human labels
  arbiter annotators add alice --role lead                            add a lead to the preference store
  arbiter annotations export --out prefs.jsonl                        human annotations -> training data
  arbiter keys new trainer-1 --scopes score,judge                     an API key and its entry for the key file
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arbiter", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"arbiter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(commands)
    _eval_parser(commands)
    _export_parser(commands)
    _serve_parser(commands)
    _label_parser(commands)
    _eval_judge_parser(commands)
    add_annotation_parsers(commands)
    add_key_parsers(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as exc:  # user mistakes: say what is wrong, no traceback
        print(f"arbiter {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _train_parser(commands: argparse._SubParsersAction) -> None:
    from arbiter.training.config import TrainConfig

    p = commands.add_parser(
        "train",
        help="train a reward model on preference data",
        description="Train a Bradley-Terry reward model. Settings come from --config (YAML), then flags. "
        "--data takes PATH[,weight=W][,split=S][,name=N]: a JSONL/JSON/Parquet/CSV file or a hub dataset name.",
    )
    p.add_argument("--config", type=Path, help="a YAML file of the settings below")
    p.add_argument("--export", type=Path, metavar="BUNDLE_DIR", help="export a bundle here after training")
    add_model_flags(p, TrainConfig)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from arbiter.training.config import TrainConfig
    from arbiter.training.train import train

    overrides = given_flags(args, TrainConfig)
    config = TrainConfig.from_yaml(args.config, **overrides) if args.config else TrainConfig.model_validate(overrides)
    run = train(config)
    if args.export and _is_main_process():
        from arbiter.training.export import export_bundle

        bundle = export_bundle(run / "checkpoint", args.export, name=config.name)
        print(f"bundle written: {bundle.path}")
    return 0


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _eval_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a bundle or a training checkpoint on preference files",
        description="Accuracy (ties count as wrong), accuracy per source and subset, mean margin, calibration "
        "(ECE) and length bias. Prints a table and writes JSON.",
    )
    p.add_argument("model", type=Path, help="a bundle folder or a training checkpoint folder")
    p.add_argument("--data", action="append", required=True, help="preference file or hub dataset (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="folder for eval.json and plots (default: none)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="bundle file to score with")
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from arbiter.training.data.load import load_source
    from arbiter.training.data.sources import SourceSpec
    from arbiter.training.evaluate import format_table, metrics, score_pairs

    groups = []
    for text in args.data:
        loaded, report = load_source(SourceSpec.parse(text))
        groups.extend(loaded)
        if report.bad:
            print(f"{report.source}: skipped bad rows {dict(report.bad)}", file=sys.stderr)
    scorer = _scorer(args.model, args.precision)
    if args.out:
        from arbiter.training.report import evaluate_into

        args.out.mkdir(parents=True, exist_ok=True)
        evaluate_into(args.out, scorer, groups)
        print(f"wrote {args.out / 'eval.json'}")
    else:
        result = metrics(score_pairs(groups, scorer))
        print(format_table(result))
        print(json.dumps({k: result[k] for k in ("pairs", "accuracy", "mean_margin", "ece")}))
    return 0


def _scorer(model: Path, precision: str):
    from arbiter.bundle.manifest import MANIFEST_FILE

    if (model / MANIFEST_FILE).is_file():
        from arbiter.bundle import load_bundle
        from arbiter.bundle.onnx_model import OnnxRewardModel

        return OnnxRewardModel.from_bundle(load_bundle(model), precision)
    import torch

    from arbiter.training.torch_scorer import TorchScorer

    return TorchScorer.from_checkpoint(model, torch.device("cpu"))


def _export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="turn a training checkpoint into a bundle (ONNX + tokenizer + manifest)",
        description="Exports fp32 ONNX, checks parity with torch on real eval inputs, optionally writes an int8 "
        "file when it agrees with fp32, computes normalization statistics, and writes a checksummed manifest.",
    )
    p.add_argument("checkpoint", type=Path, help="a run's checkpoint folder (runs/NAME/checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    p.add_argument("--name", help="model name in the manifest (default: the run folder's name)")
    p.add_argument("--model-version", help="version string (default: a UTC timestamp)")
    p.add_argument(
        "--eval-data", type=Path, help="preference file for parity and stats (default: the run's eval split)"
    )
    p.add_argument("--no-int8", action="store_true", help="skip the int8 file")
    p.add_argument(
        "--min-int8-agreement",
        type=float,
        default=0.99,
        help="keep int8 only if it orders at least this share of eval pairs like fp32 (default: 0.99)",
    )
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from arbiter.training.export import export_bundle

    bundle = export_bundle(
        args.checkpoint,
        args.out,
        name=args.name,
        model_version=args.model_version,
        eval_data=args.eval_data,
        int8=not args.no_int8,
        min_int8_agreement=args.min_int8_agreement,
    )
    print(f"bundle written: {bundle.path}")
    return 0


def _serve_parser(commands: argparse._SubParsersAction) -> None:
    from arbiter.service.settings import ServerSettings

    p = commands.add_parser(
        "serve",
        help="serve bundles over HTTP for scoring, comparing and ranking",
        description="Serve reward-model bundles. Settings: defaults, then --config (YAML), then ARBITER_* "
        "environment variables, then these flags. --bundles takes PATH or NAME=PATH and may repeat.",
    )
    p.add_argument("--config", type=Path, help="a YAML file of the settings below")
    add_model_flags(p, ServerSettings)
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from arbiter.service.serve import serve
    from arbiter.service.settings import ServerSettings

    serve(ServerSettings.load(args.config, **given_flags(args, ServerSettings)))
    return 0


def _judge_flags(p: argparse.ArgumentParser) -> None:
    """How `label` and `eval-judge` reach and use the judge."""
    p.add_argument(
        "--backend",
        choices=["local", "openai"],
        default="local",
        help="the judge's model: in process (transformers) or an OpenAI-compatible server (default: local)",
    )
    p.add_argument(
        "--model",
        default="smollm2",
        help="local: folder, hub name or alias; openai: model name (default: smollm2, a small and weak judge)",
    )
    p.add_argument("--base-url", help="openai: the server's base URL, e.g. http://host:8001/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: the variable holding the key")
    p.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per call (default: 60)")
    p.add_argument("--constitution", default="default", help="constitution name (default: default)")
    p.add_argument(
        "--constitutions",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="constitution file or folder of *.yaml besides the built-in ones (repeatable)",
    )
    p.add_argument(
        "--principle",
        action="append",
        dest="principles",
        metavar="NAME",
        help="use only this principle (repeatable; default: all of the constitution's)",
    )
    p.add_argument(
        "--sampling",
        choices=["all", "sample"],
        default="sample",
        help="sample: one principle drawn per pair, as in Constitutional AI; all: every principle, "
        "averaged (one judge call per principle) (default: sample)",
    )
    p.add_argument(
        "--chain-of-thought", action="store_true", help="reason before answering; P(A) is clamped to [0.4, 0.6]"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of principle sampling and pair order (default: 0)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="pairs in flight at once; the local backend still runs one pass at a time (default: 8)",
    )
    p.add_argument("--cache", type=Path, metavar="PATH.sqlite", help="keep verdicts in this SQLite file")
    p.add_argument(
        "--limit", type=int, help="judge at most N pairs (label: the first N; eval-judge: N drawn with --seed)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _judge_settings(args: argparse.Namespace) -> dict[str, object]:
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    return {
        "constitution": args.constitution,
        "principles": args.principles,
        "sampling": args.sampling,
        "chain_of_thought": args.chain_of_thought,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "progress": not args.no_progress,
    }


def _open_judge(args: argparse.Namespace):
    from arbiter.judge.backends import open_backend
    from arbiter.judge.cache import VerdictCache
    from arbiter.judge.constitution import ConstitutionLibrary
    from arbiter.judge.judging import Judge

    library = ConstitutionLibrary(args.constitutions)
    backend = open_backend(
        args.backend, args.model, args.base_url, args.api_key_env, args.timeout, concurrency=args.batch_size
    )
    cache = VerdictCache(path=args.cache) if args.cache else None
    return Judge(backend, library, cache, default_constitution=args.constitution)


def _label_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "label",
        help="label preference pairs with the LLM judge (RLAIF)",
        description="Judge each pair in both orders and append {prompt, chosen, rejected, preference_strength, "
        "judge} rows that `arbiter train` reads. --pairs takes {prompt, response_a, response_b} rows, or any "
        "preference file (its labels are dropped and each pair is shown in a seeded random order). Rows are "
        "written as they are judged; rerunning on the same --out judges only the pairs not yet there. A verdict "
        "of exactly 0.5 is written with tie: true, and training skips it.",
    )
    p.add_argument("--pairs", type=Path, required=True, help="the pairs to label (JSONL, JSON, Parquet or CSV)")
    p.add_argument("--out", type=Path, required=True, help="the JSONL file of labels (appended to)")
    _judge_flags(p)
    p.set_defaults(run=_run_label)


def _run_label(args: argparse.Namespace) -> int:
    import asyncio
    from collections import Counter

    from arbiter.judge.labeling import label_pairs, read_pairs

    settings = _judge_settings(args)
    skipped: Counter[str] = Counter()
    pairs = read_pairs(args.pairs, seed=args.seed, skipped=skipped)
    if skipped:
        print(f"{args.pairs}: skipped rows {dict(skipped)}", file=sys.stderr)
    pairs = pairs[: args.limit] if args.limit else pairs  # the first N, so that a larger N later extends the run
    if not pairs:
        raise ValueError(f"{args.pairs}: no pairs to label")
    judge = _open_judge(args)

    async def run():
        try:
            return await label_pairs(judge, pairs, args.out, **settings)
        finally:
            await judge.backend.aclose()

    report = asyncio.run(run())
    print(report.summary())
    print(f"labels in {args.out}")
    return 0


def _eval_judge_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval-judge",
        help="measure the LLM judge against human preference labels",
        description="Judge human-labelled pairs, the human-chosen response shown first in half of them, and report "
        "agreement with the humans (overall and on verdicts consistent across both orders), the position "
        "inconsistency rate, mean |P(A) - 0.5|, a confusion table and agreement per source. With --limit, N pairs "
        "are drawn at random (--seed).",
    )
    p.add_argument("--data", action="append", required=True, help="preference file or hub dataset (repeatable)")
    p.add_argument("--out", type=Path, help="write the report, with every verdict, as JSON here")
    _judge_flags(p)
    p.set_defaults(run=_run_eval_judge)


def _run_eval_judge(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from arbiter.judge.labeling import evaluate_judge, format_judge_report
    from arbiter.training.data.load import load_source
    from arbiter.training.data.sources import SourceSpec

    settings = _judge_settings(args)
    groups = []
    for text in args.data:
        loaded, report = load_source(SourceSpec.parse(text))
        groups.extend(loaded)
        if report.bad:
            print(f"{report.source}: skipped bad rows {dict(report.bad)}", file=sys.stderr)
    if not groups:
        raise ValueError("no labelled pairs in --data")
    judge = _open_judge(args)

    async def run():
        try:
            return await evaluate_judge(judge, groups, limit=args.limit, **settings)
        finally:
            await judge.backend.aclose()

    result = asyncio.run(run())
    print(format_judge_report(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
