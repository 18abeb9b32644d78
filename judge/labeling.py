"""AI feedback (RLAIF): label preference pairs with the constitutional judge.

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
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import cast

from pydantic import ValidationError

from arbiter.bundle.render import Prompt
from arbiter.clients.protocol import JudgeItem, Verdict
from arbiter.data.load import load_source
from arbiter.data.sources import SourceSpec, read_rows
from arbiter.judge.judging import Judge, JudgeParseError
from arbiter.judge.setup import JudgeSetup, SetupRecord


@dataclass(frozen=True)
class UnlabeledPair:
    prompt: Prompt
    response_a: str
    response_b: str
    source: str = ""

    @cached_property
    def id(self) -> str:
        return pair_id(self.prompt, self.response_a, self.response_b)


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
        prompt = cast(Prompt, row["prompt"])  # JudgeItem has just validated it as a prompt; kept as the row has it
        pairs.append(UnlabeledPair(prompt, a, b, dataset if isinstance(dataset, str) else spec.label))
    return pairs


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


def done_ids(out_path: Path, setup: SetupRecord) -> set[str]:
    """Ids of the pairs already in a label file. A last line cut short by an interruption is removed so that
    appending starts on a fresh line. Rows made by another judge setup are an error: one label file, one judge."""
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
    ours = asdict(setup)
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
        theirs = {k: info.get(k) for k in ours}
        if theirs != ours:
            differ = ", ".join(f"{k} {theirs[k]!r} there, {ours[k]!r} now" for k in ours if theirs[k] != ours[k])
            raise ValueError(f"{out_path}:{number} was labelled differently ({differ}); use another output file")
    return ids


def label_row(pair: UnlabeledPair, verdict: Verdict, setup: SetupRecord) -> dict[str, object]:
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
        **asdict(setup),
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
    setup: JudgeSetup,
) -> LabelReport:
    """Judge every pair not yet in `out_path` and append its row there as soon as its verdict is in.

    A pair the judge cannot answer (JudgeParseError: a backend without log-probabilities that wrote neither
    letter) is counted in `failed` and left out, so a rerun tries it again; a backend that is down
    (BackendError) stops the run, keeping what was written.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    record = setup.record(judge)
    report = LabelReport(pairs=len(pairs))
    done = done_ids(out_path, record)
    todo = [p for p in pairs if p.id not in done]
    report.already_done = len(pairs) - len(todo)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="pair", desc="labelling", disable=not setup.progress, file=sys.stderr)
    with out_path.open("a", encoding="utf-8") as out:

        async def one(pair: UnlabeledPair) -> None:
            try:
                verdict = await setup.verdict(judge, pair.prompt, pair.response_a, pair.response_b)
            except JudgeParseError:
                report.failed["no_answer"] += 1
                bar.update(1)
                return
            out.write(json.dumps(label_row(pair, verdict, record), ensure_ascii=False) + "\n")
            out.flush()
            report.labeled += 1
            report.ties += verdict.score == 0.5
            report.inconsistent += bool(verdict.inconsistent)
            report.from_cache += all(v.cached for v in verdict.principles)
            bar.update(1)
            bar.set_postfix(ties=report.ties, inconsistent=report.inconsistent, refresh=False)

        try:
            await setup.in_flight(todo, one)
        finally:
            bar.close()
            report.seconds = time.perf_counter() - started
    return report
