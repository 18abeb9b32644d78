"""The verifiers on their own (the server's use of them is in test_server_verifiers): the math verifier against the
GSM8K authors' grades on all 4,000 shared solutions, every extraction and failure status, the pool's real
timeouts (a SymPy expression that runs for minutes), its limits, and the QA and format rules."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from arbiter.errors import QueueFull
from arbiter.text_table import text_table
from arbiter.verifiers import format as fmt
from arbiter.verifiers import math, qa
from arbiter.verifiers.pool import VerifierPool
from arbiter.verifiers.verdict import Verdict

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "verifiable" / "gsm8k_model_solutions.jsonl"
RUNS_FOR_MINUTES = r"$\boxed{9^{9^{9^{9}}}}$"  # SymPy evaluates the tower: minutes of CPU, then memory


@pytest.fixture(scope="module")
def pool():
    pool = VerifierPool("math", workers=2, max_queue=4096, warm=math.warm)
    yield pool
    pool.close()


def gsm8k() -> list[dict]:
    return [json.loads(line) for line in GSM8K.read_text().splitlines()]


def test_math_agrees_with_the_gsm8k_authors_grades(pool: VerifierPool):
    rows = gsm8k()
    graded = [(s["solution"], r["answer"], s["is_correct"]) for r in rows for s in r["solutions"]]
    assert len(graded) == 4000

    async def verify_all() -> list[Verdict]:
        return await asyncio.gather(
            *(pool.run(math.check, text, answer, math.MathRules(), timeout=10.0) for text, answer, _ in graded)
        )

    verdicts = asyncio.run(verify_all())
    outcome: Counter[str] = Counter()
    for verdict, (_, _, correct) in zip(verdicts, graded, strict=True):
        if verdict.status in ("ok", "wrong"):
            outcome[
                "agree"
                if (verdict.status == "ok") == correct
                else "false accept"
                if correct is False
                else "false reject"
            ] += 1
        else:
            outcome["no answer" if verdict.status == "no_answer" else verdict.status] += 1
    table = [
        [k, outcome[k], f"{outcome[k] / len(graded):.4f}"]
        for k in ("agree", "false accept", "false reject", "no answer", "timeout", "error")
    ]
    print("\n" + text_table([["math vs is_correct", "solutions", "share"], *table]))
    assert outcome["agree"] / len(graded) >= 0.99, outcome
    accepted = sum(v.status == "ok" for v in verdicts)
    assert accepted == sum(c for _, _, c in graded) - outcome["false reject"] + outcome["false accept"]


@pytest.mark.parametrize(
    ("response", "label", "rules", "status", "extracted"),
    [
        # GSM8K questions of the shared file answered in other ways than its four solutions do.
        (
            "Janet keeps 16 - 3 - 4 = 9 eggs and sells them for 9 * 2 = 18 dollars. The answer is $18.",
            "18",
            {},
            "ok",
            "18",
        ),
        ("9 eggs at $2 each: \\boxed{\\$18}", "18", {"extract": ["boxed"]}, "ok", "18"),
        ("9 eggs at $2 each is $18, so the final answer is 1,800 cents", "18", {}, "wrong", None),
        ("She makes 26 dollars.\nA: 26", "18", {"extract": ["answer_is"]}, "wrong", "26"),
        ("she ends with 18", "18", {"extract": ["last_number"]}, "ok", "18"),
        ("<think>9 * 2</think><answer>18</answer>", "18", {"extract": ["tag"], "tag": "answer"}, "ok", "18"),
        # Beyond integers: fractions, percentages, LaTeX, intervals and sets, several acceptable answers.
        ("so x = \\boxed{\\frac{3}{4}}", "0.75", {"extract": ["boxed"]}, "ok", None),
        ("The answer is 75%", "3/4", {"extract": ["answer_is"]}, "ok", None),
        ("\\boxed{\\sqrt{2}/2}", "\\frac{1}{\\sqrt{2}}", {"extract": ["boxed"]}, "ok", None),
        ("\\boxed{(1, 3]}", "(1,3]", {"extract": ["boxed"]}, "ok", None),
        ("\\boxed{\\{1, 2, 3\\}}", "\\{3, 2, 1\\}", {"extract": ["boxed"]}, "ok", None),
        ("\\boxed{-2}", ["2", "-2"], {"extract": ["boxed"]}, "ok", None),
        # Failures say why, and are not `wrong`.
        ("I could not work it out.", "18", {"extract": ["boxed", "tag"], "tag": "answer"}, "no_answer", None),
        ("\\boxed{18}", None, {}, "error", None),
        ("\\boxed{18}", {"test": "x"}, {}, "error", None),
    ],
)
def test_math_extractions_and_statuses(response, label, rules, status, extracted):
    verdict = math.check(response, label, math.MathRules(**rules))
    assert verdict.status == status, verdict
    assert verdict.score == (1.0 if status == "ok" else 0.0)
    if extracted is not None:
        assert verdict.extracted == extracted
    assert verdict.failed == (status in ("no_answer", "error", "timeout"))


def test_a_runaway_expression_is_stopped_and_the_others_are_untouched(pool: VerifierPool):
    async def both() -> list[Verdict]:
        return await asyncio.gather(
            pool.run(math.check, RUNS_FOR_MINUTES, "1", math.MathRules(), timeout=1.5),
            pool.run(math.check, "A: 18", "18", math.MathRules(), timeout=1.5),
        )

    runaway, fine = asyncio.run(both())
    assert runaway.status == "timeout" and "stopped" in (runaway.detail or "")
    assert fine.status == "ok"
    assert asyncio.run(pool.run(math.check, "A: 7", "7", math.MathRules(), timeout=5)).status == "ok"


def test_a_chunk_with_a_runaway_in_it_blames_that_item_alone(pool: VerifierPool):
    # 40 items go to the workers in chunks; the chunk holding the runaway overruns, and its items run again one by
    # one, each under its own limit.
    items: list[tuple[str, object]] = [(f"A: {i}", str(i if i % 3 else i + 1)) for i in range(40)]
    items[17] = (RUNS_FOR_MINUTES, "1")
    items[25] = ("A: 1", True)  # a label that is not an answer: an error verdict for this item only
    started = time.perf_counter()
    verdicts = asyncio.run(pool.run_all(math.check, items, math.MathRules(), timeout=1.5))
    assert time.perf_counter() - started < 3 * 1.5 + 2  # the chunk's limit, then the runaway's own, not one per item
    assert verdicts[17].status == "timeout" and verdicts[25].status == "error"
    expected = ["wrong" if i % 3 == 0 else "ok" for i in range(40)]
    assert [v.status for i, v in enumerate(verdicts) if i not in (17, 25)] == [
        e for i, e in enumerate(expected) if i not in (17, 25)
    ]
    assert pool.admitted == 0


def test_the_pool_works_from_threads_other_than_the_main_one(pool: VerifierPool):
    """Where signal.alarm timeouts fail (veRL PR 5635, Math-Verify issues 50 and 55): scoring from a thread."""
    verdicts: list[Verdict] = []

    def in_a_thread() -> None:
        async def two() -> list[Verdict]:
            return await asyncio.gather(
                pool.run(math.check, "A: 18", "18", math.MathRules(), timeout=5),
                pool.run(math.check, RUNS_FOR_MINUTES, "1", math.MathRules(), timeout=1.0),
            )

        verdicts.extend(asyncio.run(two()))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join(60)
    assert [v.status for v in verdicts] == ["ok", "timeout"]


def test_a_full_pool_refuses_at_once():
    small = VerifierPool("math", workers=1, max_queue=1, warm=math.warm)

    async def three() -> list[Verdict | BaseException]:
        return await asyncio.gather(
            *(small.run(math.check, RUNS_FOR_MINUTES, "1", math.MathRules(), timeout=1.0) for _ in range(3)),
            return_exceptions=True,
        )

    try:
        results = asyncio.run(three())
    finally:
        small.close()
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert len(refused) == 1 and refused[0].status == 429
    assert [r.status for r in results if isinstance(r, Verdict)] == ["timeout", "timeout"]


def test_a_verifier_that_raises_is_an_error_verdict_for_that_item(pool: VerifierPool):
    verdict = asyncio.run(pool.run(math.check, "x", "1", "not rules", timeout=5))
    assert verdict.status == "error" and "AttributeError" in (verdict.detail or "")


@pytest.mark.parametrize(
    ("metric", "response", "label", "status", "score"),
    [
        ("exact", "The Eiffel Tower!", "eiffel tower", "ok", 1.0),
        ("exact", "Paris, France", ["Paris", "Lyon"], "wrong", 0.0),
        ("exact", " .. ", "Paris", "no_answer", 0.0),
        ("f1", "the city of Paris", ["Paris"], "wrong", 2 * (1 / 3) * 1 / (1 / 3 + 1)),
        ("f1", "Paris", ["London", "paris"], "ok", 1.0),
        ("f1", "Paris", 3, "error", 0.0),
    ],
)
def test_exact_and_f1(metric, response, label, status, score):
    verdict = qa.check(response, label, qa.QARules(metric=metric))
    assert verdict.status == status and verdict.score == pytest.approx(score)


@pytest.mark.parametrize(
    ("rules", "response", "right"),
    [
        ({"format": "think_answer"}, "<think>9 * 2 = 18</think>\n<answer>18</answer>\n", True),
        ({"format": "think_answer"}, "<think>9 * 2 = 18</think> 18", False),
        ({"format": "think_answer"}, "<think></think><answer>18</answer>", False),
        ({"format": "think_answer"}, "<think>a</think><think>b</think><answer>18</answer>", False),
        ({"format": "think_answer"}, "<think>a</think><answer>18</answer> and more", False),
        ({"format": "think_answer", "answer_tag": None}, "<think>9 * 2</think> so 18", True),
        ({"format": "tag", "tag": "answer"}, "text <answer> 18 </answer>", True),
        ({"format": "tag", "tag": "answer"}, "text <answer></answer>", False),
        ({"format": "regex", "pattern": r"Answer: \d+"}, "Answer: 18", True),
        ({"format": "regex", "pattern": r"Answer: \d+", "search": True}, "so. Answer: 18 eggs", True),
        ({"format": "regex", "pattern": r"Answer: \d+"}, "so. Answer: 18 eggs", False),
        (
            {"format": "json_schema", "schema": {"type": "object", "required": ["answer"]}},
            '```json\n{"answer": 18}\n```',
            True,
        ),
        ({"format": "json_schema", "schema": {"type": "object", "required": ["answer"]}}, '{"result": 18}', False),
        ({"format": "json_schema", "schema": {"type": "object"}}, "not json", False),
    ],
)
def test_format_rules(rules, response, right):
    verdict = fmt.check(response, None, fmt.FormatRules.model_validate(rules))
    assert verdict.status == ("ok" if right else "wrong") and verdict.score == float(right)


@pytest.mark.parametrize(
    "rules",
    [
        {"format": "tag"},
        {"format": "regex"},
        {"format": "regex", "pattern": "("},
        {"format": "json_schema", "schema": {"type": 3}},
    ],
)
def test_format_rules_that_cannot_work_are_refused_when_the_spec_loads(rules):
    with pytest.raises(ValueError):
        fmt.FormatRules.model_validate(rules)


def test_room_taken_for_a_request_comes_back_when_its_checks_are_cancelled():
    # A cancelled request (a client gone, a gRPC deadline): checks that never began must not keep their room.
    from arbiter.rewards.compose import ItemContext
    from arbiter.rewards.spec import VerifierComponent
    from arbiter.service.metrics import Metrics
    from arbiter.service.runtime.verifying import VerificationService, VerifierPolicy

    policy = VerifierPolicy(1, 8, "bwrap", None, 1, 8)
    service = VerificationService(policy, Metrics())
    component = VerifierComponent(name="correct", kind="verifier", verifier="math", options={"timeout_s": 1})
    items = [ItemContext(prompt="q", response=RUNS_FOR_MINUTES, label="1") for _ in range(3)]

    second = component.model_copy(update={"name": "again"})

    async def cancelled() -> None:
        reservation = service.admit([component, second], items)
        began = asyncio.ensure_future(service.check(component, items, reservation))
        await asyncio.sleep(0.2)  # the first check is running
        never = asyncio.ensure_future(service.check(second, items, reservation))
        began.cancel()
        never.cancel()  # before its first step: it never takes its room
        service.release(reservation)
        await asyncio.gather(began, never, return_exceptions=True)
        assert never.cancelled()

    try:
        asyncio.run(cancelled())
        assert service.pool.admitted == 0 and service.sandboxed == 0
        service.admit([component], items * 3)  # the whole room is free again: 9 fit a pool of 1 + 8
    finally:
        service.close()
