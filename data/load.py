"""Loading one source into preference groups, counting the rows that fit no shape by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from arbiter.data.schema import PreferenceGroup
from arbiter.data.shapes import BadRow, parse_row
from arbiter.data.sources import SourceSpec, read_rows


@dataclass
class SourceReport:
    source: str
    rows: int = 0
    groups: int = 0
    pairs: int = 0
    bad: Counter[str] = field(default_factory=Counter)


def load_source(spec: SourceSpec) -> tuple[list[PreferenceGroup], SourceReport]:
    report = SourceReport(spec.label)
    groups = []
    for row in read_rows(spec):
        report.rows += 1
        try:
            if "_unparsable" in row:
                raise BadRow("unparsable_row")
            group = parse_row(row, spec.label)
        except BadRow as bad:
            report.bad[bad.reason] += 1
            continue
        groups.append(group)
        report.groups += 1
        report.pairs += len(group.comparisons)
    return groups, report
