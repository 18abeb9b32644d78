"""What every verifier returns: a score, a status that says why, and what it read from the response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "wrong", "no_answer", "timeout", "error"]
# The statuses that say nothing about the response's quality: such items are masked (or given the spec's fallback),
# never silently scored 0, which would teach the policy that a slow or unparsable answer is a wrong one.
FAILURES: frozenset[Status] = frozenset({"no_answer", "timeout", "error"})


@dataclass(frozen=True)
class Verdict:
    score: float
    status: Status
    extracted: str | None = None  # the answer as the verifier read it (None: it found none)
    detail: str | None = None  # why, in words, for a failure
    seconds: float = 0.0  # how long the check itself took, in its worker or sandbox (not the wait for one)

    @property
    def failed(self) -> bool:
        return self.status in FAILURES

    @classmethod
    def judged(cls, right: bool, extracted: str | None, partial: float | None = None) -> Verdict:
        """`ok` with score 1 when right, else `wrong` with score 0 (or `partial`, a share of tests that passed)."""
        if right:
            return cls(1.0, "ok", extracted)
        return cls(partial if partial is not None else 0.0, "wrong", extracted)

    @classmethod
    def no_answer(cls, detail: str) -> Verdict:
        return cls(0.0, "no_answer", None, detail)
