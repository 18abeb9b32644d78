"""`exact` and `f1`: a short answer against one or more references, as SQuAD scores them.

Both normalize first: lower case, punctuation and the articles a, an, the removed, whitespace collapsed. `exact`
is 1 when the normalized response equals a normalized reference. `f1` is the best token F1 over the references
(shared tokens counted with multiplicity): `ok` at 1.0, otherwise `wrong` with the F1 as a partial score. An
empty response (after normalizing) is `no_answer`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from arbiter.verifiers.verdict import Verdict

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class QARules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["exact", "f1"]
    timeout_s: float = Field(2.0, gt=0, le=60)


def normalize(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def answers(label: object) -> list[str]:
    if isinstance(label, str):
        return [label]
    if isinstance(label, list) and label and all(isinstance(x, str) for x in label):
        return list(label)
    raise ValueError(f"a QA label is an answer string or a list of them, not {label!r}")


def token_f1(prediction: str, reference: str) -> float:
    ours, theirs = normalize(prediction).split(), normalize(reference).split()
    shared = sum((Counter(ours) & Counter(theirs)).values())
    if not ours or not theirs:
        return float(ours == theirs)
    if shared == 0:
        return 0.0
    precision, recall = shared / len(ours), shared / len(theirs)
    return 2 * precision * recall / (precision + recall)


def check(response: str, label: object, rules: QARules) -> Verdict:
    try:
        references = answers(label)
    except ValueError as exc:
        return Verdict(0.0, "error", None, str(exc))
    said = normalize(response)
    if not said:
        return Verdict.no_answer("the response is empty once normalized")
    if rules.metric == "exact":
        return Verdict.judged(any(said == normalize(r) for r in references), said)
    best = max(token_f1(response, r) for r in references)
    return Verdict.judged(best == 1.0, said, partial=best)
