"""Command-line flags made from a pydantic model, so a setting is declared once (its type, default, help); and the
--data flag of the commands that read preference files."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, SecretStr

if typing.TYPE_CHECKING:
    from arbiter.data.schema import PreferenceGroup


def add_model_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], aliases: Mapping[str, Sequence[str]] | None = None
) -> None:
    """One --flag per field; every default is None so that only flags the user gave override the config.
    `aliases` gives a field more flag names (names a command had before the field was shared)."""
    for name, field in model.model_fields.items():
        if SecretStr in (field.annotation, *typing.get_args(field.annotation)):
            continue  # a secret comes from the file or the environment: flags show in `ps`
        flags = ["--" + name.replace("_", "-"), *(aliases or {}).get(name, ())]
        default = field.default if field.default_factory is None else field.get_default(call_default_factory=True)
        text = (field.description or "").strip()
        help_text = f"{text} (default: {default})" if text else f"(default: {default})"
        kind, choices, repeat = _flag_type(field.annotation)
        if kind is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif repeat:
            parser.add_argument(*flags, dest=name, action="append", type=kind, default=None, help=help_text)
        else:
            parser.add_argument(*flags, dest=name, type=kind, choices=choices, default=None, help=help_text)


def given_flags(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, object]:
    return {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}


def add_data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, help="preference file or hub dataset (repeatable)")


def load_data_flag(texts: Sequence[str]) -> list[PreferenceGroup]:
    """The groups of every --data source; rows that fit no preference shape are counted on stderr, not fatal."""
    from arbiter.data.load import load_source
    from arbiter.data.sources import SourceSpec

    groups = []
    for text in texts:
        loaded, report = load_source(SourceSpec.parse(text))
        groups.extend(loaded)
        if report.bad:
            print(f"{report.source}: skipped bad rows {dict(report.bad)}", file=sys.stderr)
    return groups


def _flag_type(annotation: object) -> tuple[typing.Callable[[str], object], list[str] | None, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(inner[0])
    if origin is typing.Literal:
        return str, list(typing.get_args(annotation)), False
    if origin is list:
        (item,) = typing.get_args(annotation)
        return _with_message(getattr(item, "parse", item)), None, True
    if annotation in (int, float, str, bool, Path):
        return annotation, None, False
    raise TypeError(f"no command-line form for {annotation!r}")


def _with_message(parse: typing.Callable[[str], object]) -> typing.Callable[[str], object]:
    """argparse hides a ValueError's text; ArgumentTypeError shows it."""

    def wrapped(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return wrapped
