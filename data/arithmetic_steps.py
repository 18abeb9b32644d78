"""Step labels for GSM8K solutions, read from their calculator annotations.

GSM8K's solutions mark every calculation as `<<expression=result>>` (`16 - 3 = <<16-3=13>>13 eggs`). The rules:
1. A solution's steps are its non-empty lines; the last one states the answer (`A: 18`), in all but a few that
   ran on without one.
2. A calculation is wrong when its expression, evaluated, differs from its result by more than the result's own
   rounding (half a unit of its last written decimal), or when the number written after it differs from its result.
3. The right values of a question: the numbers in the question, the results of the reference solution's
   calculations, and those of the solutions graded correct that have no wrong calculation.
4. A solution graded correct has every step right.
5. In a solution graded wrong, the first wrong step is the first with a wrong calculation; with none, the first
   whose calculations give a value that is not a right value; with none, the answer's step. Every step before it is
   right, it and every step after it wrong (a step built on a wrong one is wrong too).
6. Left out, and counted by reason: a solution graded correct with a wrong calculation (right_answer_wrong_calculation),
   a wrong one with no calculation to locate its error by (no_calculations), a calculation that is not plain
   arithmetic (unparsable_calculation).
Rule 5's second clause is a judgement, not a check: a wrong solution may reach a value by a route no right solution
took and still be right up to there, so it can mark a right step wrong. The arithmetic clause is exact.

Expressions are model-written text: they are evaluated by simpleeval over numbers and + - * / % ** only (no names, no
calls, bounded powers), never by eval().
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping, Sequence

from simpleeval import InvalidExpression, SimpleEval, safe_mult, safe_power

CALCULATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>\$?(-?\d[\d,]*(?:\.\d+)?)?")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
ARITHMETIC = SimpleEval(
    operators={
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: safe_mult,
        ast.Div: operator.truediv,
        ast.Mod: operator.mod,
        ast.Pow: safe_power,
        ast.USub: operator.neg,
        ast.UAdd: operator.pos,
    },
    functions={},
    names={},
)

Labelled = tuple[tuple[str, ...], tuple[bool, ...]]


class Unparsable(ValueError):
    pass


def label_solutions(
    question: str, reference: str | None, solutions: Sequence[tuple[str, bool]]
) -> tuple[list[Labelled], list[str]]:
    """Each (solution, graded correct) as its steps and their labels, and the reason of each one left out."""
    checked: list[tuple[list[str], list[list[tuple[float, bool]]]] | str] = []
    for text, _ in solutions:
        steps = [line.strip() for line in text.split("\n") if line.strip()]
        try:
            checked.append((steps, [_calculations(step) for step in steps]))
        except Unparsable:
            checked.append("unparsable_calculation")
    right = [_number(n) for n in NUMBER.findall(question)]
    if reference:
        with_reference = [c for line in reference.split("\n") for c in _calculations_or_none(line)]
        right += [value for value, _ in with_reference]
    for (_, correct), check in zip(solutions, checked, strict=True):
        if correct and not isinstance(check, str) and all(ok for step in check[1] for _, ok in step):
            right += [value for step in check[1] for value, _ in step]
    labelled, dropped = [], []
    for (_, correct), check in zip(solutions, checked, strict=True):
        if isinstance(check, str):
            dropped.append(check)
            continue
        steps, calculations = check
        wrong_arithmetic = next((i for i, step in enumerate(calculations) if not all(ok for _, ok in step)), None)
        if correct:
            if wrong_arithmetic is not None:
                dropped.append("right_answer_wrong_calculation")
                continue
            first_wrong = len(steps)
        elif not any(calculations):
            dropped.append("no_calculations")
            continue
        elif wrong_arithmetic is not None:
            first_wrong = wrong_arithmetic
        else:
            off = (i for i, step in enumerate(calculations) if any(not _among(v, right) for v, _ in step))
            first_wrong = next(off, len(steps) - 1)
        labelled.append((tuple(steps), tuple(i < first_wrong for i in range(len(steps)))))
    return labelled, dropped


def _calculations(step: str) -> list[tuple[float, bool]]:
    """Each calculation of a step: its stated result, and whether it is right (rule 2)."""
    out = []
    for expression, result, written in CALCULATION.findall(step):
        try:
            value = float(ARITHMETIC.eval(expression.replace(",", "").strip()))
            stated = _number(result.strip().rstrip("."))
        except (InvalidExpression, SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
            raise Unparsable(expression) from exc
        ok = abs(value - stated) <= _rounding(result.strip())
        if written:
            ok = ok and abs(_number(written) - stated) <= max(_rounding(written), _rounding(result.strip()))
        out.append((stated, ok))
    return out


def _calculations_or_none(line: str) -> list[tuple[float, bool]]:
    try:
        return _calculations(line)
    except Unparsable:
        return []


def _number(text: str) -> float:
    value = float(text.replace(",", ""))
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _rounding(text: str) -> float:
    """Half a unit of the last written decimal, and a little more for float error."""
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    return 0.5 * 10.0**-decimals + 1e-9


def _among(value: float, right: Sequence[float]) -> bool:
    return any(abs(value - r) <= 1e-6 * max(1.0, abs(r)) for r in right)


def gsm8k_solutions(row: Mapping[str, object]) -> list[tuple[str, bool]]:
    """The (solution, is_correct) pairs of a GSM8K row; entries without both are skipped."""
    solutions = row.get("solutions")
    if not isinstance(solutions, list):
        return []
    return [
        (s["solution"], s["is_correct"])
        for s in solutions
        if isinstance(s, Mapping) and isinstance(s.get("solution"), str) and isinstance(s.get("is_correct"), bool)
    ]
