"""The `arbiter` command: each package brings its own subcommands; this only puts them together. Subcommands
import their heavy dependencies only when they run."""

from __future__ import annotations

import argparse
import sys

from arbiter import __version__
from arbiter.annotation.cli import add_parsers as add_annotation_parsers
from arbiter.clients.errors import RewardServerError
from arbiter.judge.cli import add_parsers as add_judge_parsers
from arbiter.service.access.cli import add_parsers as add_key_parsers
from arbiter.service.cli import add_parsers as add_serve_parsers
from arbiter.training.cli import add_parsers as add_training_parsers

DESCRIPTION = """Arbiter: reward models for RLHF.

  arbiter train --data prefs.jsonl --out runs/rm --export bundles/rm   train, then write a bundle
  arbiter eval bundles/rm --data heldout.jsonl                        evaluate a bundle or checkpoint
  arbiter eval http://127.0.0.1:8000 --spec mix --data heldout.jsonl   ... or a served model, the judge, a spec
  arbiter export runs/rm/checkpoint --out bundles/rm                  checkpoint -> bundle (ONNX)
  arbiter import Skywork/Skywork-Reward-V2-Qwen3-0.6B --out bundles/sk  a model trained elsewhere -> bundle
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
    add_training_parsers(commands)
    add_serve_parsers(commands)
    add_judge_parsers(commands)
    add_annotation_parsers(commands)
    add_key_parsers(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as exc:  # user mistakes: say what is wrong, no traceback
        print(f"arbiter {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RewardServerError as exc:  # a server the command talks to refused or is unreachable: its answer says why
        print(f"arbiter {args.command}: the server answered: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
