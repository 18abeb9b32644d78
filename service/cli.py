"""`arbiter serve`: every setting of ServerSettings as a flag, over the config file and the environment."""

from __future__ import annotations

import argparse
from pathlib import Path

from arbiter.cli_options import add_model_flags, given_flags


def add_parsers(commands: argparse._SubParsersAction) -> None:
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
