"""AI feedback (RLAIF): label preference pairs with the constitutional judge, and measure the judge against humans.

Labelling reads pairs, judges each pairwise (both presentation orders, averaged), and appends one row per pair to a
JSONL file that `arbiter train` reads back as it is:

    {"prompt": ..., "chosen": ..., "rejected": ..., "preference_strength": 0.83, "judge": {...}}

`preference_strength` is max(P, 1 - P) with P = P(response_a preferred): the loader's meaning of the field,
P(chosen preferred) in [0.5, 1]. Training uses it only with `use_strength` (soft labels); otherwise every label is
hard. A verdict of exactly P = 0.5 has no winner: the row is still written (so a resumed run does not judge it
again) with `"tie": true` and strength 0.5, and the training loader drops it as a tie.

Rows are flushed one by one as verdicts arrive, so an interrupted run keeps everything it finished; a rerun on the
same output reads the pair ids already there and judges only the rest. A pair's id is the sha256 of its prompt and
its two responses in sorted order, so a pair keeps its id whichever response is shown first.

Each pair is sent to the judge as its own one-item request: the judge draws the principle of `sampling="sample"`
from the seed, the item and the item's index in its request, so one-item requests keep the draw independent of
batching and of what an earlier run already labelled. `batch_size` is the number of pairs in flight at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from arbiter.bundle.render import Prompt
from arbiter.clients.protocol import JudgeItem, JudgeRequest, Verdict
from arbiter.judge.constitution import Constitution
from arbiter.judge.judging import Judge, JudgeParseError
from arbiter.training.data.load import load_source
from arbiter.training.data.schema import PreferenceGroup
from arbiter.training.data.sources import SourceSpec, read_rows
from arbiter.training.text_table import text_table

Sampling = Literal["all", "sample"]
# How a label was made; every row records these, and a resumed run must use the same.
SETUP_KEYS = ("backend", "model", "constitution", "requested_principles", "sampling", "chain_of_thought", "seed")


@dataclass(frozen=True)
class UnlabeledPair:
    prompt: Prompt
    response_a: str
    response_b: str
    source: str = ""

    @cached_property
    def id(self) -> str:
        return pair_id(self.prompt, self.response_a, self.response_b)


@dataclass(frozen=True)
class LabeledPair:
    """A pair with a human (or other trusted) label: what the judge is measured against."""

    prompt: Prompt
    chosen: str
    rejected: str
    source: str = ""


def pair_id(prompt: object, first: str, second: str) -> str:
    canonical = json.dumps([prompt, sorted([first, second])], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- reading pairs ---------------------------------------------------------------------------------------------


def read_pairs(path: Path | str, seed: int = 0, skipped: Counter[str] | None = None) -> list[UnlabeledPair]:
    """Pairs to label from a file.

    Two kinds of file, told apart by the first row:
    - unlabeled: rows of {prompt, response_a, response_b}; the order given is the order shown.
    - any preference shape the training loader reads (chosen/rejected, HH transcripts, K-wise rankings): its
      label is dropped. Each compared pair of responses is taken in an order drawn from the seed and the pair's
      id, so where `chosen` sat in the file says nothing about which response is shown as A.
    Rows that cannot be judged (bad rows in the loader's sense, empty or identical responses) are skipped and
    counted by reason in `skipped`; a row of the unlabeled kind that lacks its fields is an error. Pairs that
    repeat (same id) are kept once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    skipped = skipped if skipped is not None else Counter()
    spec = SourceSpec(path=str(path))
    first = next(iter(read_rows(spec)), None)
    if first is None:
        return []
    if "response_a" in first or "response_b" in first:
        pairs = _unlabeled_rows(spec, skipped)
    else:
        groups, report = load_source(spec)
        skipped.update(report.bad)
        pairs = []
        for group in groups:
            for c in group.comparisons:
                a, b = group.responses[c.winner], group.responses[c.loser]
                try:  # the loader takes any chat role; the judge only the ones its protocol names
                    JudgeItem(prompt=group.prompt, response_a=a, response_b=b)
                except ValidationError:
                    skipped["unjudgeable_prompt"] += 1
                    continue
                if random.Random(f"{seed}:{pair_id(group.prompt, a, b)}").random() < 0.5:
                    a, b = b, a
                pairs.append(UnlabeledPair(group.prompt, a, b, group.source))
    unique: dict[str, UnlabeledPair] = {}
    for pair in pairs:
        if pair.id in unique:
            skipped["duplicate"] += 1
        unique.setdefault(pair.id, pair)
    return list(unique.values())


def _unlabeled_rows(spec: SourceSpec, skipped: Counter[str]) -> list[UnlabeledPair]:
    pairs = []
    for number, row in enumerate(read_rows(spec), 1):
        if "_unparsable" in row:
            raise ValueError(f"{spec.path}: row {number} is not a JSON object")
        missing = [k for k in ("prompt", "response_a", "response_b") if row.get(k) is None]
        if missing:
            raise ValueError(f"{spec.path}: row {number} lacks {', '.join(missing)}")
        try:  # the judge's own request model says what a prompt may be
            item = JudgeItem(prompt=row["prompt"], response_a=row["response_a"], response_b=row["response_b"])
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{spec.path}: row {number}: {problems}") from exc
        a, b = item.response_a or "", item.response_b or ""
        if not a.strip() or not b.strip():
            skipped["empty_response"] += 1
            continue
        if a.strip() == b.strip():  # the loader would reject the labelled row as identical responses
            skipped["identical_responses"] += 1
            continue
        dataset = row.get("dataset")
        pairs.append(UnlabeledPair(row["prompt"], a, b, dataset if isinstance(dataset, str) else spec.label))
    return pairs


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


# -- judging ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeSetup:
    """Everything about how pairs are judged, beyond the pairs themselves."""

    constitution: str = "default"
    principles: list[str] | None = None
    sampling: Sampling = "sample"
    chain_of_thought: bool = False
    seed: int = 0

    def check(self, judge: Judge) -> Constitution:
        """The constitution, with every named principle in it; a ValueError (a user mistake) when not."""
        try:
            constitution = judge.constitutions.get(self.constitution)
            for name in self.principles or []:
                constitution.principle(name)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from exc
        return constitution

    def describe(self, judge: Judge, constitution: Constitution) -> tuple[object, ...]:
        """Values for SETUP_KEYS: what a label file records, and what a resumed run must match."""
        c = f"{constitution.name}@{constitution.version}"
        return (
            judge.backend.name,
            judge.backend.model,
            c,
            self.principles or None,
            self.sampling,
            self.chain_of_thought,
            self.seed,
        )

    async def verdict(self, judge: Judge, prompt: Prompt, a: str, b: str) -> Verdict:
        request = JudgeRequest(
            mode="pairwise",
            constitution=self.constitution,
            principles=self.principles or None,
            sampling=self.sampling,
            chain_of_thought=self.chain_of_thought,
            seed=self.seed,
            items=[JudgeItem(prompt=prompt, response_a=a, response_b=b)],
        )
        return (await judge.judge(request)).verdicts[0]


async def _in_flight(jobs: Sequence[Any], width: int, run: Callable[[Any], Awaitable[None]]) -> None:
    """Run `run(job)` over the jobs, `width` at a time; the first failure cancels the rest and is raised."""
    remaining = iter(jobs)

    async def worker() -> None:
        for job in remaining:  # one shared iterator: each job is taken by exactly one worker
            await run(job)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(width, len(jobs))))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- labelling -------------------------------------------------------------------------------------------------


@dataclass
class LabelReport:
    pairs: int = 0  # pairs given
    already_done: int = 0  # found in the output from an earlier run, not judged again
    labeled: int = 0  # judged and written by this run
    ties: int = 0  # of those, verdicts of exactly 0.5 (written with tie: true)
    inconsistent: int = 0  # of those, verdicts whose two presentation orders picked different responses
    from_cache: int = 0  # of those, verdicts that came entirely from the verdict cache
    failed: Counter[str] = field(default_factory=Counter)  # pairs the judge gave no verdict for (not written)
    seconds: float = 0.0

    @property
    def inconsistent_share(self) -> float | None:
        return self.inconsistent / self.labeled if self.labeled else None

    def summary(self) -> str:
        share = f"{self.inconsistent_share:.1%}" if self.inconsistent_share is not None else "n/a"
        rate = f", {self.labeled / self.seconds:.2f} pairs/s" if self.labeled and self.seconds else ""
        failed = f", failed {sum(self.failed.values())} {dict(self.failed)}" if self.failed else ""
        return (
            f"labeled {self.labeled} of {self.pairs} pairs (skipped as already done {self.already_done}), "
            f"ties {self.ties}, inconsistent {self.inconsistent} ({share}), from cache {self.from_cache}{failed}; "
            f"{self.seconds:.1f} s{rate}"
        )


def done_ids(out_path: Path, setup: dict[str, object] | None = None) -> set[str]:
    """Ids of the pairs already in a label file. A last line cut short by an interruption is removed so that
    appending starts on a fresh line. With `setup`, rows made by a different judge setup are an error: one label
    file, one judge."""
    if not out_path.is_file():
        return set()
    raw = out_path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        try:
            json.loads(raw[cut:])
            with out_path.open("ab") as handle:
                handle.write(b"\n")
        except json.JSONDecodeError:
            with out_path.open("r+b") as handle:
                handle.truncate(cut)
            raw = raw[:cut]
    ids = set()
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            info = row["judge"]
            ids.add(info["id"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{out_path}:{number}: not a row written by `arbiter label`; use another output") from exc
        theirs = {k: info.get(k) for k in SETUP_KEYS}
        if setup is not None and theirs != setup:
            differ = ", ".join(
                f"{k} {theirs[k]!r} there, {setup[k]!r} now" for k in SETUP_KEYS if theirs[k] != setup[k]
            )
            raise ValueError(f"{out_path}:{number} was labelled differently ({differ}); use another output file")
    return ids


def label_row(pair: UnlabeledPair, verdict: Verdict, setup: dict[str, object]) -> dict[str, object]:
    p = verdict.score
    a_wins = p >= 0.5
    row: dict[str, object] = {
        "prompt": pair.prompt,
        "chosen": pair.response_a if a_wins else pair.response_b,
        "rejected": pair.response_b if a_wins else pair.response_a,
        "preference_strength": max(p, 1 - p),
    }
    if p == 0.5:
        row["tie"] = True
    row["judge"] = {
        "id": pair.id,
        "p_a": p,
        "chosen": "a" if a_wins else "b",
        "inconsistent": verdict.inconsistent,
        **setup,
        "principles": [
            {
                "name": v.principle,
                "p_a": v.prob_a,
                "p_a_swapped_order": v.prob_a_swapped_order,
                **({"rationale": v.rationale} if v.rationale else {}),
            }
            for v in verdict.principles
        ],
        "source": pair.source,
    }
    return row


async def label_pairs(
    judge: Judge,
    pairs: Sequence[UnlabeledPair],
    out_path: Path | str,
    *,
    constitution: str = "default",
    principles: list[str] | None = None,
    sampling: Sampling = "sample",
    chain_of_thought: bool = False,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> LabelReport:
    """Judge every pair not yet in `out_path` and append its row there as soon as its verdict is in.

    A pair the judge cannot answer (JudgeParseError: a backend without log-probabilities that wrote neither
    letter) is counted in `failed` and left out, so a rerun tries it again; a backend that is down
    (BackendError) stops the run, keeping what was written.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    how = JudgeSetup(constitution, principles, sampling, chain_of_thought, seed)
    used = how.check(judge)
    setup = dict(zip(SETUP_KEYS, how.describe(judge, used), strict=True))
    report = LabelReport(pairs=len(pairs))
    done = done_ids(out_path, setup)
    todo = [p for p in pairs if p.id not in done]
    report.already_done = len(pairs) - len(todo)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="pair", desc="labelling", disable=not progress, file=sys.stderr)
    with out_path.open("a", encoding="utf-8") as out:

        async def one(pair: UnlabeledPair) -> None:
            try:
                verdict = await how.verdict(judge, pair.prompt, pair.response_a, pair.response_b)
            except JudgeParseError:
                report.failed["no_answer"] += 1
                bar.update(1)
                return
            out.write(json.dumps(label_row(pair, verdict, setup), ensure_ascii=False) + "\n")
            out.flush()
            report.labeled += 1
            report.ties += verdict.score == 0.5
            report.inconsistent += bool(verdict.inconsistent)
            report.from_cache += all(v.cached for v in verdict.principles)
            bar.update(1)
            bar.set_postfix(ties=report.ties, inconsistent=report.inconsistent, refresh=False)

        try:
            await _in_flight(todo, batch_size, one)
        finally:
            bar.close()
            report.seconds = time.perf_counter() - started
    return report


# -- measuring the judge against human labels -----------------------------------------------------------------


def _pick(p: float) -> str:
    return "A" if p > 0.5 else "B" if p < 0.5 else "tie"


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    agree = [r["judge_pick"] == r["human_pick"] for r in records]
    consistent = [a for a, r in zip(agree, records, strict=True) if not r["inconsistent"]]
    return {
        "pairs": n,
        "agreement": sum(agree) / n if n else None,
        "consistent_pairs": len(consistent),
        "agreement_consistent": sum(consistent) / len(consistent) if consistent else None,
        "inconsistency_rate": sum(bool(r["inconsistent"]) for r in records) / n if n else None,
        "mean_abs_margin": sum(abs(r["p_a"] - 0.5) for r in records) / n if n else None,
        "ties": sum(r["judge_pick"] == "tie" for r in records),
    }


async def evaluate_judge(
    judge: Judge,
    data: Sequence[PreferenceGroup | LabeledPair],
    *,
    constitution: str = "default",
    principles: list[str] | None = None,
    sampling: Sampling = "sample",
    chain_of_thought: bool = False,
    seed: int = 0,
    batch_size: int = 8,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Agreement of the judge's pairwise verdicts with human labels.

    The human-chosen response is shown as A in half the pairs and as B in the other half (which half is drawn
    from the seed), so a judge that always answers A scores 50%, not 100% or 0%. The judge picks A when
    P(A) > 0.5, B when P(A) < 0.5, and nothing (a tie, counted as disagreeing) at exactly 0.5. With `limit`, that
    many pairs are drawn at random (seeded) from all of them.
    """
    from tqdm import tqdm

    how = JudgeSetup(constitution, principles, sampling, chain_of_thought, seed)
    used = how.check(judge)
    pairs = labeled_pairs(data)
    rng = random.Random(seed)
    if limit is not None and limit < len(pairs):
        pairs = rng.sample(pairs, limit)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    chosen_first = set(order[: len(order) // 2])
    records: list[dict[str, Any] | None] = [None] * len(pairs)
    failed = 0
    started = time.perf_counter()
    bar = tqdm(total=len(pairs), unit="pair", desc="judging", disable=not progress, file=sys.stderr)

    async def one(index: int) -> None:
        nonlocal failed
        pair = pairs[index]
        human = "A" if index in chosen_first else "B"
        a, b = (pair.chosen, pair.rejected) if human == "A" else (pair.rejected, pair.chosen)
        try:
            verdict = await how.verdict(judge, pair.prompt, a, b)
        except (JudgeParseError, ValidationError):  # no verdict (or a prompt the judge cannot take): counted apart
            failed += 1
            bar.update(1)
            return
        records[index] = {
            "id": pair_id(pair.prompt, a, b),
            "source": pair.source,
            "human_pick": human,
            "judge_pick": _pick(verdict.score),
            "p_a": verdict.score,
            "inconsistent": bool(verdict.inconsistent),
            "principles": [v.principle for v in verdict.principles],
        }
        bar.update(1)

    try:
        await _in_flight(range(len(pairs)), batch_size, one)
    finally:
        bar.close()
    done = [r for r in records if r is not None]
    result = _summary(done)
    result["failed"] = failed
    result["confusion"] = {
        f"human_{h}": {f"judge_{j}": sum(r["human_pick"] == h and r["judge_pick"] == j for r in done) for j in "AB"}
        | {"tie": sum(r["human_pick"] == h and r["judge_pick"] == "tie" for r in done)}
        for h in "AB"
    }
    sources = sorted({r["source"] for r in done})
    result["by_source"] = {s: _summary([r for r in done if r["source"] == s]) for s in sources}
    result["judge"] = dict(zip(SETUP_KEYS, how.describe(judge, used), strict=True))
    result["seconds"] = time.perf_counter() - started
    result["verdicts"] = done
    return result


def format_judge_report(result: dict[str, Any]) -> str:
    def num(value: float | None, percent: bool = True) -> str:
        if value is None:
            return "n/a"
        return f"{value:.1%}" if percent else f"{value:.4f}"

    j = result["judge"]
    lines = [
        f"Judge {j['backend']}:{j['model']}, constitution {j['constitution']}, sampling {j['sampling']}"
        + (", chain of thought" if j["chain_of_thought"] else "")
        + f": {result['pairs']} pairs in {result['seconds']:.0f} s"
        + (f" ({result['failed']} more gave no verdict)" if result["failed"] else ""),
        text_table(
            [
                ["metric", "value"],
                ["agreement with humans (ties count as wrong)", num(result["agreement"])],
                [
                    f"agreement on consistent verdicts ({result['consistent_pairs']} pairs)",
                    num(result["agreement_consistent"]),
                ],
                ["position inconsistency (orders disagree)", num(result["inconsistency_rate"])],
                ["mean |P(A) - 0.5|", num(result["mean_abs_margin"], percent=False)],
                ["ties (P(A) = 0.5 exactly)", result["ties"]],
            ]
        ),
        "",
        "Confusion (rows: human prefers; columns: judge picks):",
        text_table(
            [["", "judge A", "judge B", "tie"]]
            + [
                [f"human {h}", *(result["confusion"][f"human_{h}"][k] for k in ("judge_A", "judge_B", "tie"))]
                for h in "AB"
            ]
        ),
    ]
    if len(result["by_source"]) > 1:
        rows = [["source", "pairs", "agreement", "agree (consistent)", "inconsistent"]]
        for name, s in result["by_source"].items():
            rows.append(
                [
                    name,
                    s["pairs"],
                    num(s["agreement"]),
                    num(s["agreement_consistent"]),
                    num(s["inconsistency_rate"]),
                ]
            )
        lines += ["", "By source:", text_table(rows)]
    return "\n".join(lines)
