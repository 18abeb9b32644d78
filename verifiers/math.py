"""`math`: is the response's final answer mathematically equal to the reference?

What counts as correct: the answer extracted from the response (see `extract`) is equal to one of the references
as Math-Verify (https://github.com/huggingface/Math-Verify) decides it: numbers (1,000 = 1000, 0.5 = 1/2 = 50%),
fractions, percentages, units stripped, LaTeX expressions compared symbolically, sets and intervals, matrices.
`strict` (Math-Verify's own) keeps variables and the form of relations significant. No answer found is `no_answer`,
not `wrong`; a reference that cannot be read is `error`.

This runs in a worker process of the verifier pool, which kills the worker at `timeout_s` (Math-Verify's own
timeouts use signal.alarm, which fails outside a main thread, so they are off here).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from arbiter.verifiers.format import last_tag
from arbiter.verifiers.verdict import Verdict

Extraction = Literal["auto", "boxed", "answer_is", "last_number", "tag"]

_ANSWER_IS = re.compile(
    r"(?:final answer|the answer)\s*(?:is|=|:)\s*(.+)|^\s*(?:A|Answer)\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?")


class MathRules(BaseModel):
    """The `math` verifier's settings, as a spec gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extract: list[Extraction] = Field(
        ["auto"],
        min_length=1,
        description="where the answer is read, tried in turn: auto (Math-Verify's own search: \\boxed{}, 'final "
        "answer is', LaTeX, plain expressions), boxed (the last \\boxed{}), answer_is (after 'the answer is' or a "
        "line 'A: ...'), last_number, tag (the last <tag>...</tag>)",
    )
    tag: str | None = Field(None, pattern=r"^[A-Za-z][\w-]*$", description="the tag for `extract: [tag]`")
    strict: bool = Field(True, description="Math-Verify's strict comparison")
    float_rounding: int = Field(6, ge=0, le=15, description="decimal places numbers are rounded to before comparing")
    timeout_s: float = Field(5.0, gt=0, le=300, description="wall-clock seconds per item; the worker is killed then")


def references(label: object) -> list[str]:
    """The acceptable answers a label holds: a string or number, or a list of them."""
    if isinstance(label, bool) or label is None:
        raise ValueError(f"a math label is an answer (a string or number) or a list of them, not {label!r}")
    if isinstance(label, str | int | float):
        return [str(label)]
    if isinstance(label, list) and label and all(isinstance(x, str | int | float) for x in label):
        return [str(x) for x in label]
    raise ValueError(f"a math label is an answer (a string or number) or a list of them, not {label!r}")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin : i - 1].strip() if depth == 0 else None


def candidate(response: str, how: Extraction, tag: str | None) -> str | None:
    """The answer text one extraction finds (for `auto`, the whole response: Math-Verify searches it)."""
    if how == "auto":
        return response
    if how == "boxed":
        return last_boxed(response)
    if how == "answer_is":
        found = list(_ANSWER_IS.finditer(response))
        if not found:
            return None
        text = (found[-1].group(1) or found[-1].group(2)).strip()
        return text.removesuffix(".").strip() or None
    if how == "last_number":
        numbers = _NUMBER.findall(response)
        return numbers[-1].replace(",", "").replace(" ", "") if numbers else None
    if tag is None:
        raise ValueError("extract: tag needs `tag`")
    return last_tag(response, tag)


def check(response: str, label: object, rules: MathRules) -> Verdict:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    try:
        golds = references(label)
    except ValueError as exc:
        return Verdict(0.0, "error", None, str(exc))
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed_golds = []
    for gold in golds:
        # A bare answer is read as math, whether it is LaTeX (\frac{1}{2}) or plain (1/2, 18, 50%).
        parsed = parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$", configs, parsing_timeout=None)
        if not parsed:
            return Verdict(0.0, "error", None, f"the reference {gold!r} could not be read as math")
        parsed_golds.append(parsed)
    for how in rules.extract:
        text = candidate(response, how, rules.tag)
        if text is None:
            continue
        # An extracted answer is read as math as a whole; a dollar sign around or in it is money or delimiters.
        wrapped = text if how == "auto" else f"${text.strip('$').strip()}$"
        pred = parse(wrapped, configs, parsing_timeout=None)
        if not pred:
            continue
        extracted = str(pred[-1])  # Math-Verify gives [sympy form, the text it matched]
        right = any(
            verify(gold, pred, float_rounding=rules.float_rounding, strict=rules.strict, timeout_seconds=None)
            for gold in parsed_golds
        )
        return Verdict.judged(right, extracted)
    return Verdict.no_answer(f"no answer found by {', '.join(rules.extract)}")


def warm() -> None:
    """Run once in each new worker: the imports and Math-Verify's grammar load here, not inside an item's time."""
    # Math-Verify warns on every call that its own timeouts are off: here they are off on purpose (see above).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    check("The answer is $\\frac{1}{2}$", "0.5", MathRules())
