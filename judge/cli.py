"""`arbiter label` and `arbiter eval-judge`: the judge over many pairs, from the command line. Both reach the judge
through the flags of JudgeSettings, the ones `arbiter serve` takes (--judge-backend, --judge-model, ...)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from arbiter.cli_options import add_data_flag, add_model_flags, given_flags, load_data_flag
from arbiter.errors import NotFound
from arbiter.judge.settings import JudgeSettings

if TYPE_CHECKING:
    from arbiter.judge.judging import Judge
    from arbiter.judge.setup import JudgeSetup

Result = TypeVar("Result")

# The names these commands had before they shared the server's judge settings; the README still shows them.
FORMER_FLAG_NAMES = {
    "judge_backend": ["--backend"],
    "judge_model": ["--model"],
    "judge_base_url": ["--base-url"],
    "default_constitution": ["--constitution"],
    "judge_cache_path": ["--cache"],
}


def add_parsers(commands: argparse._SubParsersAction) -> None:
    label = commands.add_parser(
        "label",
        help="label preference pairs with the LLM judge (RLAIF)",
        description="Judge each pair in both orders and append {prompt, chosen, rejected, preference_strength, "
        "judge} rows that `arbiter train` reads. --pairs takes {prompt, response_a, response_b} rows, or any "
        "preference file (its labels are dropped and each pair is shown in a seeded random order). Rows are "
        "written as they are judged; rerunning on the same --out judges only the pairs not yet there. A verdict "
        "of exactly 0.5 is written with tie: true, and training skips it.",
    )
    label.add_argument("--pairs", type=Path, required=True, help="the pairs to label (JSONL, JSON, Parquet or CSV)")
    label.add_argument("--out", type=Path, required=True, help="the JSONL file of labels (appended to)")
    _judge_flags(label)
    label.set_defaults(run=_run_label)

    evaluate = commands.add_parser(
        "eval-judge",
        help="measure the LLM judge against human preference labels",
        description="Judge human-labelled pairs, the human-chosen response shown first in half of them, and report "
        "agreement with the humans (overall and on verdicts consistent across both orders), the position "
        "inconsistency rate, mean |P(A) - 0.5|, a confusion table and agreement per source. With --limit, N pairs "
        "are drawn at random (--seed).",
    )
    add_data_flag(evaluate)
    evaluate.add_argument("--out", type=Path, help="write the report, with every verdict, as JSON here")
    _judge_flags(evaluate)
    evaluate.set_defaults(run=_run_eval_judge)


def _judge_flags(p: argparse.ArgumentParser) -> None:
    """How `label` and `eval-judge` reach the judge (JudgeSettings) and use it (JudgeSetup)."""
    add_model_flags(p, JudgeSettings, aliases=FORMER_FLAG_NAMES)
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
        help="pairs in flight at once, and backend calls unless --judge-concurrency says; the local backend "
        "still runs one pass at a time (default: 8)",
    )
    p.add_argument(
        "--limit", type=int, help="judge at most N pairs (label: the first N; eval-judge: N drawn with --seed)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _setup(args: argparse.Namespace) -> JudgeSetup:
    from arbiter.judge.setup import JudgeSetup

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    return JudgeSetup(
        principles=args.principles,
        sampling=args.sampling,
        chain_of_thought=args.chain_of_thought,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )


def _open_judge(args: argparse.Namespace) -> Judge:
    given = given_flags(args, JudgeSettings)
    given.setdefault("judge_concurrency", args.batch_size)  # a pair in flight is a backend call in flight
    settings = JudgeSettings.model_validate(given)
    try:
        library = settings.open_library()
    except NotFound as exc:  # an unknown --default-constitution
        raise ValueError(exc.message) from exc
    backend = settings.open_backend()
    if backend is None:
        raise ValueError("this command needs a judge: --judge-backend local or openai")
    return settings.open_judge(backend, library)


def _judging(judge: Judge, work: Coroutine[Any, Any, Result]) -> Result:
    """Run the work, then close the judge's backend whatever happened."""

    async def run() -> Result:
        try:
            return await work
        finally:
            await judge.backend.aclose()

    return asyncio.run(run())


def _run_label(args: argparse.Namespace) -> int:
    from collections import Counter

    from arbiter.judge.labeling import label_pairs, read_pairs

    setup = _setup(args)
    skipped: Counter[str] = Counter()
    pairs = read_pairs(args.pairs, seed=args.seed, skipped=skipped)
    if skipped:
        print(f"{args.pairs}: skipped rows {dict(skipped)}", file=sys.stderr)
    pairs = pairs[: args.limit] if args.limit else pairs  # the first N, so that a larger N later extends the run
    if not pairs:
        raise ValueError(f"{args.pairs}: no pairs to label")
    judge = _open_judge(args)
    report = _judging(judge, label_pairs(judge, pairs, args.out, setup))
    print(report.summary())
    print(f"labels in {args.out}")
    return 0


def _run_eval_judge(args: argparse.Namespace) -> int:
    from arbiter.judge.evaluation import evaluate_judge, format_table, write_json

    setup = _setup(args)
    groups = load_data_flag(args.data)
    if not groups:
        raise ValueError("no labelled pairs in --data")
    judge = _open_judge(args)
    result = _judging(judge, evaluate_judge(judge, groups, setup, args.limit))
    print(format_table(result))
    if args.out:
        write_json(result, args.out)
        print(f"wrote {args.out}")
    return 0
