"""`code`: does the response's program pass the tests its item carries? Run only inside the sandbox.

The program is the last fenced code block of the response (```python, ```py or bare ```), or the whole response
when it has none. The label gives the tests, in one of two shapes:
- HumanEval's: {"test": "def check(candidate): ...", "entry_point": "NAME", "prompt": "..."?}. The program, then
  the tests, then `check(NAME)` run as one script; it passes when the script exits 0. When the program does not
  define NAME itself (a completion of the prompt's function body), the label's `prompt` is put in front of it.
- Input and output: {"cases": [{"input": "...", "output": "..."}, ...]}. Each case runs the program with the input
  on stdin; it passes when stdout equals the output, trailing whitespace aside.
`reward: all` (the default) scores 1 when every test passes, else 0; `reward: share` scores the share of cases
that pass. A program that runs past its limits, crashes or prints too much fails (`wrong`: it is the program's
fault); a response with no program is `no_answer`; a label of neither shape, or a sandbox that cannot start, is
`error`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arbiter.sandbox.base import Run, Sandbox, SandboxFailed, SandboxLimits
from arbiter.verifiers.verdict import Verdict

_FENCED = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)


class CodeRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reward: Literal["all", "share"] = "all"
    cpu_s: int = Field(5, gt=0, le=60, description="CPU seconds per run")
    wall_s: float = Field(10.0, gt=0, le=120, description="wall-clock seconds per run")
    memory_mb: int = Field(512, ge=64, le=8192)

    @property
    def timeout_s(self) -> float:
        return self.wall_s

    def limits(self) -> SandboxLimits:
        return SandboxLimits(cpu_s=self.cpu_s, wall_s=self.wall_s, memory_mb=self.memory_mb)


def program_of(response: str) -> str:
    blocks = _FENCED.findall(response)
    return (blocks[-1] if blocks else response).strip("\n")


def _why(run: Run) -> str:
    if run.timed_out:
        return "ran past its wall-clock limit"
    if run.signal is not None:
        return f"killed by signal {run.signal}"
    last = run.stderr.strip().splitlines()[-1:] or [f"exit code {run.exit_code}"]
    return last[0][:300]


async def check(response: str, label: Any, rules: CodeRules, sandbox: Sandbox) -> Verdict:
    try:
        return await _check(response, label, rules, sandbox)
    except SandboxFailed as exc:  # nothing is known of the program: an error, which the spec masks by default
        return Verdict(0.0, "error", None, str(exc))


async def _check(response: str, label: Any, rules: CodeRules, sandbox: Sandbox) -> Verdict:
    program = program_of(response)
    if not program.strip():
        return Verdict.no_answer("the response holds no program")
    limits = rules.limits()
    if isinstance(label, dict) and isinstance(label.get("test"), str) and isinstance(label.get("entry_point"), str):
        entry = label["entry_point"]
        defined = re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", program, re.M)
        head = "" if defined else str(label.get("prompt") or "")
        script = f"{head}{program}\n\n{label['test']}\n\ncheck({entry})\n"
        run = await sandbox.run(script, "", limits)
        return Verdict(1.0, "ok", program) if run.passed else Verdict(0.0, "wrong", program, _why(run))
    cases = label.get("cases") if isinstance(label, dict) else None
    if not (
        isinstance(cases, list) and cases and all(isinstance(c, dict) and "input" in c and "output" in c for c in cases)
    ):
        return Verdict(
            0.0, "error", None, 'a code label is {"test", "entry_point"} or {"cases": [{"input", "output"}]}'
        )
    runs = await asyncio.gather(*(sandbox.run(program, str(c["input"]), limits) for c in cases))
    passed = [r.passed and _same(r.stdout, str(c["output"])) for r, c in zip(runs, cases, strict=True)]
    share = sum(passed) / len(passed)
    if all(passed):
        return Verdict(1.0, "ok", program)
    first = passed.index(False)
    detail = f"case {first} failed: " + (_why(runs[first]) if not runs[first].passed else "wrong output")
    return Verdict(share if rules.reward == "share" else 0.0, "wrong", program, detail)


def _same(got: str, expected: str) -> bool:
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines()]

    return lines(got) == lines(expected)
