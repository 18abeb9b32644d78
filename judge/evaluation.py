"""The judge measured against human labels: agreement, position consistency, margins and the confusion table.

The human-chosen response is shown as A in half the pairs and as B in the other half (which half is drawn from the
seed), so a judge that always answers A scores 50%, not 100% or 0%. The judge picks A when P(A) > 0.5, B when
P(A) < 0.5, and nothing (a tie, counted as disagreeing) at exactly 0.5. A verdict is inconsistent when its two
presentation orders picked different responses; agreement is also reported on the consistent verdicts alone.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from arbiter.bundle.render import Prompt
from arbiter.data.schema import PreferenceGroup
from arbiter.judge.judging import Judge, JudgeParseError
from arbiter.judge.labeling import pair_id
from arbiter.judge.setup import JudgeSetup, SetupRecord
from arbiter.text_table import text_table

Pick = Literal["A", "B", "tie"]


@dataclass(frozen=True)
class LabeledPair:
    """A pair with a human (or other trusted) label: what the judge is measured against."""

    prompt: Prompt
    chosen: str
    rejected: str
    source: str = ""


@dataclass(frozen=True)
class JudgedPair:
    """One human-labelled pair as it was shown to the judge, and what the judge said."""

    id: str
    source: str
    human_pick: Literal["A", "B"]
    judge_pick: Pick
    p_a: float
    inconsistent: bool
    principles: list[str]


@dataclass
class Agreement:
    pairs: int
    agreement: float | None  # share of pairs where the judge picked the human's response (ties count as wrong)
    consistent_pairs: int
    agreement_consistent: float | None  # the same, on verdicts whose two orders agreed
    inconsistency_rate: float | None
    mean_abs_margin: float | None  # mean |P(A) - 0.5|
    ties: int


@dataclass
class JudgeEvaluation(Agreement):
    failed: int  # pairs the judge gave no verdict for (or whose prompt it cannot take), left out above
    # confusion["human_A"]["judge_B"]: pairs where the human preferred A and the judge picked B
    confusion: dict[str, dict[str, int]]
    by_source: dict[str, Agreement]
    judge: SetupRecord
    seconds: float
    verdicts: list[JudgedPair]


def labeled_pairs(groups: Sequence[PreferenceGroup | LabeledPair]) -> list[LabeledPair]:
    """Every human comparison as a pair: one per pairwise group, each compared pair of a ranking."""
    out = []
    for g in groups:
        if isinstance(g, LabeledPair):
            out.append(g)
            continue
        label = f"{g.source}/{g.subset}" if g.subset else g.source
        out.extend(LabeledPair(g.prompt, g.responses[c.winner], g.responses[c.loser], label) for c in g.comparisons)
    return out


def pick(p_a: float) -> Pick:
    return "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"


def presentation(
    pairs: Sequence[LabeledPair], seed: int, limit: int | None = None
) -> tuple[Sequence[LabeledPair], set[int]]:
    """The pairs to judge (all, or `limit` of them drawn at random) and the indices of the half, also drawn, that
    show the human-chosen response first."""
    rng = random.Random(seed)
    if limit is not None and limit < len(pairs):
        pairs = rng.sample(pairs, limit)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    return pairs, set(order[: len(order) // 2])


async def judge_pairs(
    judge: Judge, pairs: Sequence[LabeledPair], chosen_first: set[int], setup: JudgeSetup
) -> tuple[list[JudgedPair], int]:
    """The judge's verdict on every pair, shown with the human-chosen response first where its index is in
    `chosen_first`; and the number of pairs that got no verdict."""
    from tqdm import tqdm

    judged: list[JudgedPair | None] = [None] * len(pairs)
    failed = 0
    bar = tqdm(total=len(pairs), unit="pair", desc="judging", disable=not setup.progress, file=sys.stderr)

    async def one(index: int) -> None:
        nonlocal failed
        pair = pairs[index]
        human: Literal["A", "B"] = "A" if index in chosen_first else "B"
        a, b = (pair.chosen, pair.rejected) if human == "A" else (pair.rejected, pair.chosen)
        try:
            verdict = await setup.verdict(judge, pair.prompt, a, b)
        except (JudgeParseError, ValidationError):  # no verdict (or a prompt the judge cannot take): counted apart
            failed += 1
            bar.update(1)
            return
        judged[index] = JudgedPair(
            id=pair_id(pair.prompt, a, b),
            source=pair.source,
            human_pick=human,
            judge_pick=pick(verdict.score),
            p_a=verdict.score,
            inconsistent=bool(verdict.inconsistent),
            principles=[v.principle for v in verdict.principles],
        )
        bar.update(1)

    try:
        await setup.in_flight(range(len(pairs)), one)
    finally:
        bar.close()
    return [j for j in judged if j is not None], failed


def agreement(judged: Sequence[JudgedPair]) -> Agreement:
    n = len(judged)
    agree = [j.judge_pick == j.human_pick for j in judged]
    consistent = [a for a, j in zip(agree, judged, strict=True) if not j.inconsistent]
    return Agreement(
        pairs=n,
        agreement=sum(agree) / n if n else None,
        consistent_pairs=len(consistent),
        agreement_consistent=sum(consistent) / len(consistent) if consistent else None,
        inconsistency_rate=sum(j.inconsistent for j in judged) / n if n else None,
        mean_abs_margin=sum(abs(j.p_a - 0.5) for j in judged) / n if n else None,
        ties=sum(j.judge_pick == "tie" for j in judged),
    )


def confusion(judged: Sequence[JudgedPair]) -> dict[str, dict[str, int]]:
    return {
        f"human_{h}": {
            column: sum(j.human_pick == h and j.judge_pick == picked for j in judged)
            for column, picked in (("judge_A", "A"), ("judge_B", "B"), ("tie", "tie"))
        }
        for h in "AB"
    }


async def evaluate_judge(
    judge: Judge,
    data: Sequence[PreferenceGroup | LabeledPair],
    setup: JudgeSetup,
    limit: int | None = None,
) -> JudgeEvaluation:
    """Agreement of the judge's pairwise verdicts with human labels; with `limit`, on that many pairs drawn at
    random (seeded) from all of them."""
    record = setup.record(judge)
    pairs, chosen_first = presentation(labeled_pairs(data), setup.seed, limit)
    started = time.perf_counter()
    judged, failed = await judge_pairs(judge, pairs, chosen_first, setup)
    sources = sorted({j.source for j in judged})
    return JudgeEvaluation(
        **asdict(agreement(judged)),
        failed=failed,
        confusion=confusion(judged),
        by_source={s: agreement([j for j in judged if j.source == s]) for s in sources},
        judge=record,
        seconds=time.perf_counter() - started,
        verdicts=judged,
    )


def format_table(result: JudgeEvaluation) -> str:
    """The on-screen report: the headline figures, the confusion table, and agreement per source when several."""

    def num(value: float | None, percent: bool = True) -> str:
        if value is None:
            return "n/a"
        return f"{value:.1%}" if percent else f"{value:.4f}"

    j = result.judge
    lines = [
        f"Judge {j.backend}:{j.model}, constitution {j.constitution}, sampling {j.sampling}"
        + (", chain of thought" if j.chain_of_thought else "")
        + f": {result.pairs} pairs in {result.seconds:.0f} s"
        + (f" ({result.failed} more gave no verdict)" if result.failed else ""),
        text_table(
            [
                ["metric", "value"],
                ["agreement with humans (ties count as wrong)", num(result.agreement)],
                [
                    f"agreement on consistent verdicts ({result.consistent_pairs} pairs)",
                    num(result.agreement_consistent),
                ],
                ["position inconsistency (orders disagree)", num(result.inconsistency_rate)],
                ["mean |P(A) - 0.5|", num(result.mean_abs_margin, percent=False)],
                ["ties (P(A) = 0.5 exactly)", result.ties],
            ]
        ),
        "",
        "Confusion (rows: human prefers; columns: judge picks):",
        text_table(
            [["", "judge A", "judge B", "tie"]]
            + [
                [f"human {h}", *(result.confusion[f"human_{h}"][k] for k in ("judge_A", "judge_B", "tie"))]
                for h in "AB"
            ]
        ),
    ]
    if len(result.by_source) > 1:
        rows: list[list[object]] = [["source", "pairs", "agreement", "agree (consistent)", "inconsistent"]]
        for name, s in result.by_source.items():
            rows.append([name, s.pairs, num(s.agreement), num(s.agreement_consistent), num(s.inconsistency_rate)])
        lines += ["", "By source:", text_table(rows)]
    return "\n".join(lines)


def write_json(result: JudgeEvaluation, path: Path) -> None:
    """The report with every verdict: the figures at the top level, as format_table shows them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False) + "\n")
