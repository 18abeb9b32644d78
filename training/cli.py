"""`arbiter train`, `arbiter eval`, `arbiter export` and `arbiter import`: a reward model from preference data (or
from another trainer) to a bundle."""

from __future__ import annotations

import argparse
import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from arbiter.bundle.steps import DEFAULT_STEP_AGGREGATE, STEP_AGGREGATES
from arbiter.cli_options import add_data_flag, add_model_flags, given_flags, load_data_flag

if TYPE_CHECKING:
    from arbiter.data.schema import PreferenceGroup
    from arbiter.training.evaluate import Scorer
    from arbiter.training.export import FidelityGate
    from arbiter.training.section_scores import SectionTable


def add_parsers(commands: argparse._SubParsersAction) -> None:
    _train_parser(commands)
    _eval_parser(commands)
    _export_parser(commands)
    _import_parser(commands)


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
    if args.export and os.environ.get("RANK", "0") == "0":  # under torchrun, the first process exports
        from arbiter.training.export import export_bundle

        bundle = export_bundle(run / "checkpoint", args.export, name=config.name)
        print(f"bundle written: {bundle.path}")
    return 0


def _eval_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a bundle, a training checkpoint or a running server on preference files",
        description="Accuracy (ties count as wrong), accuracy per source and subset with bootstrap 95% intervals "
        "(resampling prompts), mean margin, calibration (ECE), length bias, the length-controlled split and, for "
        "K-wise data, best-of-N. Prints a table and writes JSON. A server URL is scored through Arbiter's "
        "protocol: a served model, the judge (--served-model judge) or a reward spec (--spec), measured by the same "
        "code as a bundle.",
    )
    p.add_argument(
        "model",
        help="a bundle folder, a training checkpoint folder, or a server URL (http://host:8000, grpc://host:50051; "
        "the key is read from ARBITER_API_KEY)",
    )
    add_data_flag(p)
    p.add_argument("--out", type=Path, default=None, help="folder for eval.json and plots (default: none)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="bundle file to score with")
    served = p.add_mutually_exclusive_group()
    served.add_argument("--served-model", help="with a URL: the model to score with (default: the server's default)")
    served.add_argument("--spec", help="with a URL: score with this reward spec instead of a model")
    p.add_argument(
        "--sections",
        help="also score RewardBench's way: subsets (or sources, for pairs without one) grouped into sections, "
        "weighted, then averaged; a built-in table (rewardbench, rewardbench-2) or a YAML file of the same shape "
        "(sections.json with --out)",
    )
    p.add_argument(
        "--timeout-s", type=float, default=300.0, help="with a URL: seconds per request (a judge writes rationales)"
    )
    p.add_argument(
        "--max-items", type=int, default=64, help="with a URL: responses per request, at most the server's max_items"
    )
    p.add_argument(
        "--solutions",
        type=Path,
        help="also best-of-N on graded solutions (rows: question, solutions [{solution, is_correct}], as GSM8K's "
        "example_model_solutions): how often the top-scored solution is correct, against random and the oracle",
    )
    p.add_argument(
        "--step-separator",
        help="a process reward model (bundle): what ends each step of a response, such as a newline (default: its "
        "step token)",
    )
    p.add_argument(
        "--step-aggregate",
        choices=STEP_AGGREGATES,
        default=DEFAULT_STEP_AGGREGATE,
        help="a process reward model (bundle): the step scores' reduction that scores a response (default: "
        f"{DEFAULT_STEP_AGGREGATE})",
    )
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from arbiter.training.section_scores import check_subsets, load_table

    groups = load_data_flag(args.data)
    table = load_table(args.sections) if args.sections else None
    if table is not None:
        check_subsets(table, groups)
    with ExitStack() as resources:
        return _evaluate(args, groups, table, _scorer(args, resources))


def _evaluate(
    args: argparse.Namespace, groups: list[PreferenceGroup], table: SectionTable | None, scorer: Scorer
) -> int:
    from arbiter.training.report import evaluate_into

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    if args.solutions:
        from arbiter.training.best_of_solutions import best_of_solutions, format_best_of_solutions, load_questions
        from arbiter.training.evaluate import to_json

        solutions = best_of_solutions(load_questions(args.solutions), scorer)
        print(format_best_of_solutions(solutions))
        if args.out:
            (args.out / "best_of_solutions.json").write_text(to_json(solutions))
    result = evaluate_into(args.out, scorer, groups, table)
    print(json.dumps({k: result[k] for k in ("pairs", "accuracy", "mean_margin", "ece")}))
    if args.out:
        print(f"wrote {args.out / 'eval.json'}")
    return 0


def _scorer(args: argparse.Namespace, resources: ExitStack) -> Scorer:
    from arbiter.bundle.manifest import MANIFEST_FILE

    if "://" in args.model:
        from arbiter.clients import RewardClient
        from arbiter.training.served_scorer import ServedModelScorer, SpecScorer

        if args.precision != "fp32":
            raise ValueError("--precision picks a bundle's file; a server scores with what it serves")
        client = resources.enter_context(RewardClient(args.model, timeout=args.timeout_s, chunk_size=args.max_items))
        if args.spec:
            return SpecScorer(client, args.spec, args.max_items)
        return ServedModelScorer(client, args.served_model)
    if args.served_model or args.spec:
        raise ValueError("--served-model and --spec choose what a server URL scores with; this is a folder")
    model = Path(args.model)
    if (model / MANIFEST_FILE).is_file():
        from arbiter.bundle import load_bundle
        from arbiter.bundle.onnx_model import OnnxRewardModel

        onnx = OnnxRewardModel.from_bundle(load_bundle(model), args.precision)
        if onnx.spec.steps is not None:  # a PRM scores each response as a solution: its steps' aggregate
            return lambda prompts, responses: onnx.solution_scores(
                prompts, responses, args.step_separator, args.step_aggregate
            )
        return onnx
    import torch

    from arbiter.training.torch_scorer import TorchScorer

    return TorchScorer.from_checkpoint(model, torch.device("cpu"))


def _export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="turn a training checkpoint into a bundle (ONNX + tokenizer + manifest)",
        description="Exports fp32 ONNX, checks parity with torch on real eval inputs, optionally writes an int8 "
        "file when it keeps fp32's accuracy and ranking, computes normalization statistics, and writes a checksummed "
        "manifest.",
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
        "--no-bf16", action="store_true", help="skip the bf16 weights (the torch backend's --precision bf16)"
    )
    _int8_gate_arguments(p)
    _fusion_argument(p)
    p.set_defaults(run=_run_export)


def _int8_gate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--int8-max-accuracy-change",
        type=float,
        default=0.005,
        help="keep int8 only if its eval accuracy is within this of fp32's (default: 0.005, half a point)",
    )
    p.add_argument(
        "--int8-min-spearman",
        type=float,
        default=0.995,
        help="keep int8 only if its scores' Spearman correlation with fp32's is at least this (default: 0.995)",
    )


def _fusion_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-fuse",
        action="store_true",
        help="write standard ONNX operators only (for runtimes other than ONNX Runtime); slower to serve",
    )


def _int8_gate(args: argparse.Namespace) -> FidelityGate:
    from arbiter.training.export import FidelityGate

    return FidelityGate(max_accuracy_change=args.int8_max_accuracy_change, min_spearman=args.int8_min_spearman)


def _run_export(args: argparse.Namespace) -> int:
    from arbiter.training.export import export_bundle

    bundle = export_bundle(
        args.checkpoint,
        args.out,
        name=args.name,
        model_version=args.model_version,
        eval_data=args.eval_data,
        int8=not args.no_int8,
        int8_gate=_int8_gate(args),
        bf16=not args.no_bf16,
        fuse=not args.no_fuse,
    )
    print(f"bundle written: {bundle.path}")
    return 0


def _import_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "import",
        help="turn a reward model trained elsewhere (transformers, TRL, OpenRLHF, PEFT) into a bundle",
        description="Imports a *ForSequenceClassification checkpoint (what TRL's RewardTrainer writes and most "
        "downloaded reward models are), an OpenRLHF reward model, or a PEFT adapter over either (merged). Exports "
        "ONNX and checks that its batched scores equal the original model's own forward within --tolerance, on "
        "--eval-data or on built-in texts; with --runtime torch the bundle names the checkpoint instead of "
        "holding a graph (for models too large for ONNX).",
    )
    p.add_argument("checkpoint", help="a local folder or a hub id")
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    p.add_argument("--name", help="model name in the manifest (default: the checkpoint folder's name)")
    p.add_argument("--model-version", help="version string (default: a UTC timestamp)")
    p.add_argument("--objective", help="a model with several labels: the one that is the score (default: the first)")
    p.add_argument("--max-length", type=int, help="token limit (default: the model's own, at most 4096)")
    p.add_argument(
        "--chat-template", choices=["auto", "none"], default="auto", help="the tokenizer's template, or plain text"
    )
    p.add_argument("--eval-data", type=Path, help="preference file: parity texts, held-out metrics, normalization")
    p.add_argument(
        "--runtime",
        choices=["onnx", "torch", "remote"],
        default="onnx",
        help="an ONNX graph; torch at serve time; or remote: an engine (--engine-url) serves the model",
    )
    p.add_argument("--engine-url", help="runtime remote: the engine's base URL (http://vllm:8000)")
    p.add_argument(
        "--engine-protocol", choices=["vllm", "sglang", "tei"], default="vllm", help="runtime remote: how to ask it"
    )
    p.add_argument("--engine-model", help="runtime remote: the name the engine serves the model under")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 file (written only with --eval-data)")
    p.add_argument(
        "--step-token",
        help="a process reward model, read at this token after every step: Math-Shepherd's step tag (a *ForCausalLM) "
        "or Qwen2.5-Math-PRM's <extra_0> (a two-class head); --eval-data is then stepwise rows",
    )
    p.add_argument("--good-token", default="+", help="Math-Shepherd layout: the token whose logit says right")
    p.add_argument("--bad-token", default="-", help="Math-Shepherd layout: the token whose logit says wrong")
    _int8_gate_arguments(p)
    _fusion_argument(p)
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest |difference| allowed (default: 1e-4)")
    p.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from arbiter.training.importing.importer import import_model, import_remote

    if args.step_token:
        from arbiter.training.importing.step_importer import import_step_model

        if args.runtime != "onnx" or args.objective:
            raise ValueError("a process reward model (--step-token) is imported to runtime onnx, with one output")
        steps = import_step_model(
            args.checkpoint,
            args.out,
            args.step_token,
            good_token=args.good_token,
            bad_token=args.bad_token,
            name=args.name,
            model_version=args.model_version,
            max_length=args.max_length,
            chat_template=args.chat_template,
            eval_data=args.eval_data,
            tolerance=args.tolerance,
            fuse=not args.no_fuse,
        )
        print(f"bundle written: {steps.path} (a process reward model, read at {args.step_token!r})")
        return 0

    if args.runtime == "remote":
        from arbiter.bundle.manifest import Engine

        if not args.engine_url:
            raise ValueError("--runtime remote needs --engine-url")
        engine = Engine(url=args.engine_url, protocol=args.engine_protocol, model=args.engine_model)
        remote = import_remote(
            args.checkpoint,
            args.out,
            engine,
            name=args.name,
            model_version=args.model_version,
            objective=args.objective,
            max_length=args.max_length,
            chat_template=args.chat_template,
        )
        print(f"bundle written: {remote.path} (scored by {engine.protocol} at {engine.url})")
        return 0
    bundle = import_model(
        args.checkpoint,
        args.out,
        name=args.name,
        model_version=args.model_version,
        objective=args.objective,
        max_length=args.max_length,
        chat_template=args.chat_template,
        eval_data=args.eval_data,
        runtime=args.runtime,
        int8=not args.no_int8,
        int8_gate=_int8_gate(args),
        tolerance=args.tolerance,
        fuse=not args.no_fuse,
    )
    print(f"bundle written: {bundle.path}")
    return 0
