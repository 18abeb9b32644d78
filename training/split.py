"""The training run's data: every source loaded, split by prompt into train and eval, the training side weighted."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from arbiter.data.load import SourceReport, load_source
from arbiter.data.schema import PreferenceGroup
from arbiter.data.sources import SourceSpec
from arbiter.text_table import text_table


class Keyed(Protocol):
    @property
    def prompt_key(self) -> str: ...


Example = TypeVar("Example", bound=Keyed)


@dataclass
class LoadedData(Generic[Example]):
    train: list[Example]
    eval: list[Example]
    reports: list[SourceReport]
    unit: str = "pairs"  # what a source's examples teach, for the table: pairs, or steps

    def summary_table(self) -> str:
        reasons = sorted({r for rep in self.reports for r in rep.bad})
        header = ["source", "rows", "kept", self.unit, *reasons]
        lines: list[Sequence[object]] = [header]
        for rep in self.reports:
            lines.append([rep.source, rep.rows, rep.groups, rep.pairs, *(rep.bad.get(r, 0) for r in reasons)])
        lines.append(["split", "", f"train {len(self.train)}", f"eval {len(self.eval)}", *([""] * len(reasons))])
        title = "bad rows by reason" if reasons else "no bad rows"
        kind = "Preference" if self.unit == "pairs" else "Stepwise"
        return f"{kind} data ({title}):\n" + text_table(lines)


def is_eval(group: Keyed, eval_fraction: float) -> bool:
    """Deterministic by prompt: one prompt always falls on the same side, whatever the order of rows."""
    return int(group.prompt_key[:8], 16) / 0xFFFFFFFF < eval_fraction


def load_preferences(
    sources: list[SourceSpec],
    eval_fraction: float = 0.1,
    seed: int = 0,
    max_groups_per_source: int | None = None,
    balance_sources: bool = False,
) -> LoadedData[PreferenceGroup]:
    """Read, parse, split by prompt, then weight the training side of each source (and balance them, if asked)."""
    return load_split(sources, load_source, eval_fraction, seed, max_groups_per_source, balance_sources)


def load_split(
    sources: list[SourceSpec],
    load: Callable[[SourceSpec], tuple[list[Example], SourceReport]],
    eval_fraction: float = 0.1,
    seed: int = 0,
    max_groups_per_source: int | None = None,
    balance_sources: bool = False,
    unit: str = "pairs",
) -> LoadedData[Example]:
    rng = random.Random(seed)
    evaluation: list[Example] = []
    reports = []
    per_source: list[list[Example]] = []
    for spec in sources:
        groups, report = load(spec)
        reports.append(report)
        source_train = [g for g in groups if not is_eval(g, eval_fraction)]
        source_eval = [g for g in groups if is_eval(g, eval_fraction)]
        if max_groups_per_source is not None:
            source_train = rng.sample(source_train, min(max_groups_per_source, len(source_train)))
            source_eval = source_eval[: max(1, int(max_groups_per_source * eval_fraction))]
        per_source.append(_weighted(source_train, spec.weight, rng))
        evaluation.extend(source_eval)
    if balance_sources:
        # A small source seen as often as the largest: its own preferences (length, say) weigh as much.
        largest = max((len(groups) for groups in per_source), default=0)
        per_source = [_weighted(groups, largest / len(groups), rng) if groups else groups for groups in per_source]
    train = [g for groups in per_source for g in groups]
    rng.shuffle(train)
    return LoadedData(train, evaluation, reports, unit)


def _weighted(groups: list[Example], weight: float, rng: random.Random) -> list[Example]:
    whole, fraction = divmod(weight, 1.0)
    out = groups * int(whole)
    out += rng.sample(groups, round(len(groups) * fraction))
    return out
