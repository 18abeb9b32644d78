"""Each program in a fresh bubblewrap sandbox, started by the server: its own user (one per concurrent slot, so a
process limit counts this run only), new namespaces for everything (no network but its own empty loopback, its own
process tree, which dies whole when the run ends), a read-only view of /usr and nothing else of the machine, a
private writable working folder and /tmp that are removed afterwards, and resource limits set by prlimit before
anything of the program runs.

    prlimit --cpu --as --nproc --fsize --nofile -- setpriv --reuid U --regid U -- bwrap ... python3 -I main.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from arbiter.sandbox.base import Run, SandboxLimits, SandboxUnavailable

FIRST_UID = 61000  # users nobody else has: each slot runs as its own
PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


def find_python() -> str:
    for candidate in PYTHONS:
        if Path(candidate).is_file():
            return candidate
    raise SandboxUnavailable(f"no system Python for the sandbox (looked for {', '.join(PYTHONS)})")


class BubblewrapSandbox:
    def __init__(self, slots: int = 4, python: str | None = None) -> None:
        """`slots` runs at once; the rest wait for a slot (how many may wait is the server's admission, in
        service/runtime/verifying.py)."""
        for tool in ("bwrap", "prlimit", "setpriv"):
            if shutil.which(tool) is None:
                raise SandboxUnavailable(f"{tool} is not installed (Debian: apt-get install bubblewrap util-linux)")
        if os.geteuid() != 0:
            # Each slot runs as a user of its own, so that the process limit counts that run alone (and root's own
            # processes are never limited): only a server started as root can switch to those users.
            raise SandboxUnavailable(
                "the bubblewrap sandbox runs each program as a user of its own: start the server as root"
            )
        self.python = python or find_python()
        self.slots = slots
        self._free: asyncio.Queue[int] | None = None  # made in the loop that uses it
        self.in_flight = 0

    def _uids(self) -> asyncio.Queue[int]:
        if self._free is None:
            self._free = asyncio.Queue()
            for slot in range(self.slots):
                self._free.put_nowait(FIRST_UID + slot)
        return self._free

    async def run(self, program: str, stdin: str = "", limits: SandboxLimits | None = None) -> Run:
        limits = limits or SandboxLimits()
        free = self._uids()
        uid = await free.get()
        self.in_flight += 1
        try:
            return await self._run(uid, program, stdin, limits)
        finally:
            self.in_flight -= 1
            free.put_nowait(uid)

    def _command(self, uid: int, work: Path, limits: SandboxLimits) -> list[str]:
        memory = limits.memory_mb * 1024 * 1024
        return [
            "prlimit",
            f"--cpu={limits.cpu_s}",
            f"--as={memory}",
            f"--nproc={limits.processes}",
            f"--fsize={limits.output_bytes}",
            "--nofile=64",
            "--core=0",
            "--",
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--",
            "bwrap",
            "--unshare-all",  # user, ipc, pid, net, uts, cgroup: nothing shared with the machine
            "--unshare-user",  # required, not only tried (--unshare-all tries it), for --disable-userns
            "--die-with-parent",
            "--as-pid-1",  # no reaper of its own: the outer bwrap waits for the program, so no zombie is left
            "--new-session",
            "--disable-userns",
            "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin",
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
            "--bind", str(work), "/work",
            "--chdir", "/work",
            "--clearenv",
            "--setenv", "PATH", "/usr/bin",
            "--setenv", "HOME", "/work",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--",
            self.python, "-I", "main.py",
        ]  # fmt: skip

    async def _run(self, uid: int, program: str, stdin: str, limits: SandboxLimits) -> Run:
        root = Path(tempfile.mkdtemp(prefix="arbiter-sandbox-"))
        os.chmod(root, 0o711)  # the run's user passes through to its folder; the output files stay the server's
        try:
            work = root / "work"
            work.mkdir()
            (work / "main.py").write_text(program, encoding="utf-8", errors="surrogatepass")
            os.chown(work, uid, uid)
            os.chmod(work, 0o700)
            (root / "stdin").write_text(stdin, encoding="utf-8", errors="surrogatepass")
            started = time.perf_counter()
            with (root / "stdin").open("rb") as i, (root / "stdout").open("wb") as o, (root / "stderr").open("wb") as e:
                process = await asyncio.create_subprocess_exec(
                    *self._command(uid, work, limits), stdin=i, stdout=o, stderr=e, start_new_session=True
                )
                timed_out = False
                try:
                    await asyncio.wait_for(process.wait(), limits.wall_s)
                except TimeoutError:
                    timed_out = True
                except asyncio.CancelledError:
                    await _stop(process)
                    raise
                if timed_out:
                    await _stop(process)
            wall = time.perf_counter() - started
            stdout, out_cut = _read(root / "stdout", limits.output_bytes)
            stderr, err_cut = _read(root / "stderr", limits.output_bytes)
            code = process.returncode
            return Run(
                exit_code=code if code is not None and code >= 0 else None,
                signal=-code if code is not None and code < 0 else None,
                stdout=stdout,
                stderr=stderr,
                timed_out=timed_out,
                output_truncated=out_cut or err_cut,
                wall_s=wall,
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Kills the program (pid 1 of its namespace, so the kernel kills everything else in there), then lets bwrap,
    its parent, reap it and exit: killing bwrap first would leave the program a zombie of the machine's init."""
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.kill(int(child), signal.SIGKILL)
    try:
        await asyncio.wait_for(process.wait(), 2.0)
    except TimeoutError:  # bwrap itself hangs: the whole session (prlimit, setpriv and bwrap are one process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _read(path: Path, limit: int) -> tuple[str, bool]:
    data = path.read_bytes()[:limit]
    return data.decode("utf-8", "replace"), path.stat().st_size >= limit
