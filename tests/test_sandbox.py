"""The sandbox on this machine (bubblewrap), with hostile programs: each is contained, leaves no process behind, and
the sandbox goes on serving; then the code verifier on HumanEval: every canonical solution passes its own tests,
and each fails the next task's tests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from arbiter.sandbox.base import Run, SandboxLimits
from arbiter.sandbox.bwrap import FIRST_UID, BubblewrapSandbox
from arbiter.verifiers import code

HUMANEVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "verifiable" / "humaneval.jsonl"
LIMITS = SandboxLimits(cpu_s=2, wall_s=4, memory_mb=256, processes=16, output_bytes=64 * 1024)
SLOTS = 4
HOSTILE = {
    "infinite_loop": "while True:\n    pass",
    "sleeps_forever": "import time\ntime.sleep(3600)",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "memory_hog": "hog = bytearray(4 * 1024**3)\nprint('allocated')",
    "prints_gigabytes": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
    "opens_a_socket": "import socket\nsocket.create_connection(('127.0.0.1', 8000), timeout=2)\nprint('connected')",
    "reads_the_key_file": "print(open('/root/.cache/arbiter/keys.yaml').read())",
    "reads_outside": "import os\nprint(sorted(os.listdir('/')))\nprint(open('/etc/passwd').read())",
    "writes_outside": "open('/usr/evil', 'w').write('x')\nprint('wrote')",
    "kills_its_parent": "import os, signal\nfor pid in (os.getppid(), 1, -1):\n    os.kill(pid, signal.SIGKILL)",
    "leaves_children": "import subprocess\nsleeper = ['/usr/bin/python3', '-c', 'import time; time.sleep(600)']\n"
    "subprocess.Popen(sleeper)\nprint('left one')",
}


def sandbox_processes() -> list[int]:
    """Processes running as any slot's user, anywhere on the machine."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid = int(next(line for line in status.read_text().splitlines() if line.startswith("Uid:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
        if FIRST_UID <= uid < FIRST_UID + SLOTS:
            found.append(int(status.parent.name))
    return found


@pytest.fixture(scope="module")
def sandbox() -> BubblewrapSandbox:
    return BubblewrapSandbox(slots=SLOTS)


def run(sandbox: BubblewrapSandbox, program: str, stdin: str = "", limits: SandboxLimits = LIMITS) -> Run:
    return asyncio.run(sandbox.run(program, stdin, limits))


def test_a_plain_program_runs_with_its_input(sandbox):
    done = run(sandbox, "import sys\nprint(sys.stdin.read().upper())", "abc")
    assert done.passed and done.stdout == "ABC\n"


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_programs_are_contained(sandbox, name):
    done = run(sandbox, HOSTILE[name])
    assert done.wall_s < LIMITS.wall_s + 2, done
    if name in ("infinite_loop", "sleeps_forever", "fork_bomb"):
        assert not done.passed and (done.timed_out or done.signal or done.exit_code), done
    elif name == "memory_hog":
        assert not done.passed and "MemoryError" in done.stderr
    elif name == "prints_gigabytes":
        assert not done.passed and done.output_truncated and len(done.stdout) <= LIMITS.output_bytes
    elif name == "opens_a_socket":
        assert not done.passed and "connected" not in done.stdout  # no network: its own empty loopback
    elif name == "reads_the_key_file":
        assert not done.passed and "No such file" in done.stderr
    elif name == "reads_outside":
        assert not done.passed and "root" not in done.stdout.split("\n")[0]  # the view holds /usr and nothing else
    elif name == "writes_outside":
        assert not done.passed and "Read-only file system" in done.stderr
    elif name == "kills_its_parent":
        assert not done.passed  # it can only kill itself: outside its namespace it sees no process, the server's none
    elif name == "leaves_children":
        assert done.passed and "left one" in done.stdout
    assert sandbox_processes() == [], "a process of the sandbox outlived its run"
    assert run(sandbox, "print(6 * 7)").stdout == "42\n"  # and the sandbox goes on serving


def test_runs_do_not_share_their_folders(sandbox):
    async def both() -> list[Run]:
        write = "open('mine.txt', 'w').write('secret')\nimport time\ntime.sleep(0.5)\nprint('ok')"
        look = "import os, time\ntime.sleep(0.2)\nprint(os.listdir('.'), os.listdir('/tmp'))"
        return await asyncio.gather(sandbox.run(write, "", LIMITS), sandbox.run(look, "", LIMITS))

    writer, looker = asyncio.run(both())
    assert writer.passed and looker.passed and "mine.txt" not in looker.stdout


def humaneval() -> list[dict]:
    return [json.loads(line) for line in HUMANEVAL.read_text().splitlines()]


def test_humaneval_canonical_solutions_pass_and_fail_the_next_tasks_tests(sandbox):
    tasks = humaneval()
    assert len(tasks) == 164
    rules = code.CodeRules(wall_s=20, cpu_s=15)

    def label(task: dict) -> dict:
        return {"test": task["test"], "entry_point": task["entry_point"], "prompt": task["prompt"]}

    async def verify_all() -> tuple[list, list]:
        own = [code.check(t["canonical_solution"], label(t), rules, sandbox) for t in tasks]
        # The next task's tests, run against this task's whole solution (its prompt and body) under the next name.
        crossed = []
        for t, nxt in zip(tasks, tasks[1:] + tasks[:1], strict=True):
            program = f"{t['prompt']}{t['canonical_solution']}\n\n{nxt['entry_point']} = {t['entry_point']}\n"
            crossed.append(code.check(program, label(nxt), rules, sandbox))
        return list(await asyncio.gather(*own)), list(await asyncio.gather(*crossed))

    own, crossed = asyncio.run(verify_all())
    failing = [t["task_id"] for t, v in zip(tasks, own, strict=True) if v.status != "ok"]
    assert failing == [], [v.detail for v in own if v.status != "ok"][:5]
    wrongly_passing = [t["task_id"] for t, v in zip(tasks, crossed, strict=True) if v.status != "wrong"]
    assert wrongly_passing == []
    print(f"\nHumanEval: {len(tasks)} canonical solutions pass; all {len(crossed)} fail the next task's tests")


@pytest.mark.parametrize(
    ("response", "label", "rules", "status", "score"),
    [
        (
            "```python\nprint(int(input()) * 2)\n```",
            {"cases": [{"input": "2", "output": "4"}, {"input": "5", "output": "10"}]},
            {},
            "ok",
            1.0,
        ),
        (
            "```python\nprint(4)\n```",
            {"cases": [{"input": "2", "output": "4"}, {"input": "5", "output": "10"}]},
            {"reward": "share"},
            "wrong",
            0.5,
        ),
        (
            "```python\nprint(4)\n```",
            {"cases": [{"input": "2", "output": "4"}, {"input": "5", "output": "10"}]},
            {},
            "wrong",
            0.0,
        ),
        (
            "```python\nwhile True: pass\n```",
            {"cases": [{"input": "", "output": ""}]},
            {"wall_s": 2, "cpu_s": 1},
            "wrong",
            0.0,
        ),
        ("I would rather not.\n```\n```", {"cases": [{"input": "", "output": ""}]}, {}, "no_answer", 0.0),
        ("print(1)", {"tests": "nothing"}, {}, "error", 0.0),
    ],
)
def test_input_output_cases_and_statuses(sandbox, response, label, rules, status, score):
    verdict = asyncio.run(code.check(response, label, code.CodeRules(**rules), sandbox))
    assert (verdict.status, verdict.score) == (status, score), verdict
