"""Benchmark scores the way RewardBench reports them: subsets grouped into sections, a section's score the
weighted mean of its subsets' accuracies, the overall score the plain mean of the sections. A pair without a subset
counts under its source, so a table can also group whole files.

The tables are data (`section_tables/*.yaml`, or a user's file of the same shape): `rewardbench` (v1: Chat, Chat
Hard, Safety, Reasoning, weighted by RewardBench's example counts) and `rewardbench-2` (one section per subset,
best-of-N). Every score has a bootstrap 95% interval, resampling each subset's prompts (each with all of its pairs
or groups) on its own, with a seed of its own (adding a file to the data leaves the other subsets' draws as they
were)."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, NamedTuple, TypedDict

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from arbiter.data.schema import PreferenceGroup
from arbiter.text_table import text_table
from arbiter.training.evaluate import ScoredPairs, bootstrap_shares

BUILTIN = Path(__file__).resolve().parent / "section_tables"
RESAMPLES = 1000


class SectionTable(BaseModel):
    """Which subsets make up each section, and how much each weighs in it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    metric: Literal["accuracy", "best_of_n"] = Field(
        "accuracy", description="accuracy: pairs; best_of_n: K-wise groups whose chosen response must beat all"
    )
    sections: dict[str, dict[str, PositiveFloat]] = Field(min_length=1)

    def subsets(self) -> set[str]:
        return {s for weights in self.sections.values() for s in weights}


class SubsetHits(NamedTuple):
    """A subset's hits (pairs, or best-of-N groups) and the prompt key of each: the unit its interval resamples."""

    hits: np.ndarray
    prompts: np.ndarray


class SubsetScore(TypedDict):
    count: int
    weight: float
    score: float


class SectionScore(TypedDict):
    score: float
    score_low: float
    score_high: float
    subsets: dict[str, SubsetScore]
    missing: list[str]


class SectionReport(TypedDict):
    table: str
    metric: str
    score: float
    score_low: float
    score_high: float
    sections: dict[str, SectionScore]
    absent_sections: list[str]
    unmapped: list[str]


def builtin_tables() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def load_table(name_or_path: str) -> SectionTable:
    """A built-in table by name, or a YAML file of the same shape."""
    path = BUILTIN / f"{name_or_path}.yaml"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{name_or_path}: no such section table (built in: {', '.join(builtin_tables())})")
    return SectionTable.model_validate(yaml.safe_load(path.read_text()))


def subset_of(subset: str | None, source: str) -> str:
    return source if subset is None else subset


def check_subsets(table: SectionTable, groups: Iterable[PreferenceGroup]) -> None:
    """Refuse data that has none of the table's subsets, or (best-of-N) no K-wise group in them, before anything is
    scored."""
    groups, known = list(groups), table.subsets()
    present = {subset_of(g.subset, g.source) for g in groups}
    if not present & known:
        found = ", ".join(sorted(present)[:5]) or "none"
        raise ValueError(f"section table {table.name!r}: the data has none of its subsets (the data's: {found})")
    if table.metric == "best_of_n" and not any(
        len(g.responses) > 2 and subset_of(g.subset, g.source) in known for g in groups
    ):
        raise ValueError(f"section table {table.name!r} scores best-of-N: its subsets have no group of 3+ responses")


def section_scores(pairs: ScoredPairs, table: SectionTable, seed: int = 0) -> SectionReport:
    hits_by_subset, known = _hits(pairs, table.metric), table.subsets()
    draws = {
        name: bootstrap_shares(h.hits, RESAMPLES, [seed, zlib.crc32(name.encode())], h.prompts)
        for name, h in hits_by_subset.items()
        if name in known
    }
    if not draws:
        raise ValueError(f"section table {table.name!r}: no scored pair or group falls in any of its subsets")
    sections: dict[str, SectionScore] = {}
    section_draws: list[np.ndarray] = []
    for section, weights in table.sections.items():
        present = [s for s in weights if s in draws]
        if not present:
            continue
        w = np.array([weights[s] for s in present]) / sum(weights[s] for s in present)
        point = float(w @ np.array([hits_by_subset[s].hits.mean() for s in present]))
        resampled = w @ np.stack([draws[s] for s in present])
        section_draws.append(resampled)
        sections[section] = {
            "score": point,
            "score_low": float(np.percentile(resampled, 2.5)),
            "score_high": float(np.percentile(resampled, 97.5)),
            "subsets": {
                s: {
                    "count": len(hits_by_subset[s].hits),
                    "weight": weights[s],
                    "score": float(hits_by_subset[s].hits.mean()),
                }
                for s in present
            },
            "missing": [s for s in weights if s not in draws],
        }
    overall = np.mean(section_draws, axis=0)
    return {
        "table": table.name,
        "metric": table.metric,
        "score": float(np.mean([s["score"] for s in sections.values()])),
        "score_low": float(np.percentile(overall, 2.5)),
        "score_high": float(np.percentile(overall, 97.5)),
        "sections": sections,
        "absent_sections": [s for s in table.sections if s not in sections],
        "unmapped": sorted(set(hits_by_subset) - known),
    }


def _hits(pairs: ScoredPairs, metric: str) -> dict[str, SubsetHits]:
    if metric == "accuracy":
        hits, subsets, sources, prompts = pairs.chosen > pairs.rejected, pairs.subset, pairs.source, pairs.prompt
    else:
        hits, subsets, sources, prompts = pairs.best_hit, pairs.best_subset, pairs.best_source, pairs.best_prompt
    grouped: dict[str, list[int]] = defaultdict(list)
    for i, (subset, source) in enumerate(zip(subsets, sources, strict=True)):
        grouped[subset_of(subset, source)].append(i)
    return {k: SubsetHits(np.asarray(hits, dtype=float)[v], prompts[v]) for k, v in grouped.items()}


def format_sections(report: SectionReport) -> str:
    rows: list[tuple[str, ...]] = [(f"{report['table']} section", "subsets", "score", "95% interval")]
    for name, s in report["sections"].items():
        rows.append(
            (name, str(len(s["subsets"])), f"{s['score']:.3f}", f"[{s['score_low']:.3f}, {s['score_high']:.3f}]")
        )
    rows.append(("SCORE", "", f"{report['score']:.3f}", f"[{report['score_low']:.3f}, {report['score_high']:.3f}]"))
    lines = [text_table(rows)]
    missing = [m for s in report["sections"].values() for m in s["missing"]]
    if missing:
        lines.append(f"not in the data (their sections are scored without them): {', '.join(missing)}")
    if report["absent_sections"]:
        lines.append(
            f"sections with no subset in the data (the score is over the rest): {', '.join(report['absent_sections'])}"
        )
    if report["unmapped"]:
        lines.append(f"in no section (not counted): {', '.join(report['unmapped'])}")
    return "\n".join(lines)
