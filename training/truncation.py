"""How much of the data fits in max_length: per source, the responses and pairs that were cut, and where."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TypedDict

from arbiter.text_table import text_table
from arbiter.training.batching import EncodedGroup


class SourceTruncation(TypedDict):
    responses: int
    prompt_cut: int  # the prompt lost its start; the response is whole
    response_cut: int  # the response alone was too long: its end is lost, and the whole prompt
    pairs: int
    pairs_cut: int  # comparisons where either side was cut


def truncation_report(items: Sequence[EncodedGroup]) -> dict[str, SourceTruncation]:
    report: dict[str, SourceTruncation] = defaultdict(
        lambda: {"responses": 0, "prompt_cut": 0, "response_cut": 0, "pairs": 0, "pairs_cut": 0}
    )
    for item in items:
        row = report[item.group.source]
        row["responses"] += len(item.cut)
        row["prompt_cut"] += sum(c == "prompt" for c in item.cut)
        row["response_cut"] += sum(c == "response" for c in item.cut)
        for c in item.group.comparisons:
            row["pairs"] += 1
            row["pairs_cut"] += item.cut[c.winner] is not None or item.cut[c.loser] is not None
    return dict(sorted(report.items()))


def format_truncation(report: dict[str, SourceTruncation], max_length: int) -> str:
    rows: list[Sequence[object]] = [["source", "pairs", "pairs cut", "responses", "prompt cut", "response cut"]]
    for source, r in report.items():
        rows.append(
            [
                source,
                r["pairs"],
                _share(r["pairs_cut"], r["pairs"]),
                r["responses"],
                _share(r["prompt_cut"], r["responses"]),
                _share(r["response_cut"], r["responses"]),
            ]
        )
    title = f"Truncation at max_length {max_length} (prompts lose their start, responses their end):"
    return title + "\n" + text_table(rows)


def _share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else "0"
