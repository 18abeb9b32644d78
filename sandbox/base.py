"""What every sandbox backend takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 5  # CPU seconds (RLIMIT_CPU): an infinite loop is killed here
    wall_s: float = 10.0  # wall-clock seconds: a program that sleeps or waits is killed here
    memory_mb: int = 512  # address space (RLIMIT_AS)
    processes: int = 32  # processes and threads at once (RLIMIT_NPROC, for the run's own user): a fork bomb stops here
    output_bytes: int = 1 << 20  # stdout and stderr each, and any file the program writes (RLIMIT_FSIZE)
    tmp_mb: int = 64  # the private /tmp


@dataclass(frozen=True)
class Run:
    exit_code: int | None  # None: killed by a signal
    signal: int | None
    stdout: str
    stderr: str
    timed_out: bool  # the wall-clock limit was reached and the run was killed
    output_truncated: bool
    wall_s: float

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class SandboxUnavailable(RuntimeError):
    """This server cannot run the sandbox (a tool missing, not started as root, no URL for a remote one)."""


class SandboxFailed(RuntimeError):
    """The sandbox could not run a program (a remote sandbox down or in error): nothing is known of the program."""


class Sandbox(Protocol):
    in_flight: int

    async def run(self, program: str, stdin: str = "", limits: SandboxLimits | None = None) -> Run:
        """Runs a Python program; never raises for anything the program does (SandboxFailed: for the sandbox)."""
        ...
