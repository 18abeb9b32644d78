"""Loading one source into examples (preference groups, or stepwise examples), counting by reason the rows, or the
parts of rows, that fit no shape."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from arbiter.data.schema import PreferenceGroup
from arbiter.data.shapes import BadRow, parse_row
from arbiter.data.sources import SourceSpec, read_rows

Example = TypeVar("Example")
# A row's examples, and the reason for each part of it that was left out (a row with several solutions can keep some).
RowParser = Callable[[Mapping[str, object], str], tuple[list[Example], list[str]]]


@dataclass
class SourceReport:
    source: str
    rows: int = 0
    groups: int = 0  # examples kept: preference groups, or stepwise examples
    pairs: int = 0  # what those examples teach: comparisons, or labelled steps
    bad: Counter[str] = field(default_factory=Counter)


def load_source(spec: SourceSpec) -> tuple[list[PreferenceGroup], SourceReport]:
    return load_examples(spec, _preference_row, lambda g: len(g.comparisons))


def load_examples(
    spec: SourceSpec, parse: RowParser[Example], units: Callable[[Example], int]
) -> tuple[list[Example], SourceReport]:
    report = SourceReport(spec.label)
    examples: list[Example] = []
    for row in read_rows(spec):
        report.rows += 1
        try:
            if "_unparsable" in row:
                raise BadRow("unparsable_row")
            kept, dropped = parse(row, spec.label)
        except BadRow as bad:
            report.bad[bad.reason] += 1
            continue
        report.bad.update(dropped)
        examples.extend(kept)
        report.groups += len(kept)
        report.pairs += sum(units(e) for e in kept)
    return examples, report


def _preference_row(row: Mapping[str, object], source: str) -> tuple[list[PreferenceGroup], list[str]]:
    return [parse_row(row, source)], []
