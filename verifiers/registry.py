"""The verifiers a reward spec can name, each with its rules (a spec's `options`) and its check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from arbiter.verifiers import code, format, math, qa
from arbiter.verifiers.verdict import Verdict

VerifierName = Literal["math", "exact", "f1", "format", "code"]


class Rules(Protocol):
    @property
    def timeout_s(self) -> float: ...


@dataclass(frozen=True)
class Verifier:
    rules: Callable[[Mapping[str, Any]], Rules]
    check: Callable[[str, Any, Any], Verdict] | None  # (response, label, rules); runs in a worker of the pool
    needs_label: bool
    sandboxed: bool = False  # runs the response as a program: in the sandbox (code.check), not in the pool


VERIFIERS: dict[VerifierName, Verifier] = {
    "math": Verifier(lambda o: math.MathRules.model_validate(o), math.check, True),
    "exact": Verifier(lambda o: qa.QARules.model_validate({**o, "metric": "exact"}), qa.check, True),
    "f1": Verifier(lambda o: qa.QARules.model_validate({**o, "metric": "f1"}), qa.check, True),
    "format": Verifier(lambda o: format.FormatRules.model_validate(o), format.check, False),
    "code": Verifier(lambda o: code.CodeRules.model_validate(o), None, True, sandboxed=True),
}


def warm() -> None:
    """Each new worker loads what the verifiers import before its first item, so no item pays for it."""
    math.warm()
