"""Worker processes for verifiers that can run away (a SymPy simplification may take minutes): each item has a
wall-clock limit that is enforced by killing the worker that runs it (pebble), never by signal.alarm, which only works
in a main thread and, where it fails, silently scores everything 0.

The pool caps how many items run at once (its workers) and how many wait (`max_queue`); beyond that a request is
refused at once with 429, as the model queues do. A verifier that raises, or a worker that dies, gives that item an
`error` verdict; the other items of the request are not touched.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from typing import Any

from pebble import ProcessExpired, ProcessPool

from arbiter.errors import QueueFull
from arbiter.verifiers.verdict import Verdict

log = logging.getLogger("arbiter.verifiers")


class VerifierPool:
    def __init__(self, name: str, workers: int, max_queue: int, warm: Callable[[], None] | None = None) -> None:
        self.name, self.workers, self.max_queue, self._warm = name, workers, max_queue, warm
        self._pool: ProcessPool | None = None
        self.admitted = 0  # running or waiting

    def _started(self) -> ProcessPool:
        if self._pool is None:
            # forkserver: workers start from a small clean process, not from a copy of the server and its threads.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPool(max_workers=self.workers, context=context, initializer=self._warm)
        return self._pool

    def reserve(self, count: int) -> None:
        """Room for `count` items, all or none (QueueFull): a request is admitted whole before any of it runs.
        Each reserved item is then run with `run(..., reserved=True)`, which gives its room back."""
        if self.admitted + count > self.workers + self.max_queue:
            raise QueueFull(
                f"the {self.name} pool has {self.admitted} items running or waiting and {count} more do not fit "
                f"(limit {self.workers + self.max_queue}); retry later",
                retry_after=1.0,
                details={"limit": "verifier_max_queue", "value": self.admitted + count},
            )
        self.admitted += count

    async def run(
        self, verifier: Callable[..., Verdict], *args: Any, timeout: float, reserved: bool = False
    ) -> Verdict:
        """The verifier's verdict on one item, or a `timeout` or `error` verdict; QueueFull when the pool is full."""
        if not reserved:
            self.reserve(1)
        try:
            future = self._started().schedule(verifier, args=args, timeout=timeout)
            return await asyncio.wrap_future(future)
        except TimeoutError:
            return Verdict(0.0, "timeout", None, f"no verdict in {timeout:g} s; its worker was stopped")
        except ProcessExpired as exc:
            log.warning("verifier worker died", extra={"verifier": self.name, "reason": str(exc)})
            return Verdict(0.0, "error", None, f"the verifier's worker died ({exc})")
        except Exception as exc:  # the verifier's own failure on this item: reported on it, and in the log
            log.warning("verifier failed", extra={"verifier": self.name, "reason": repr(exc)})
            return Verdict(0.0, "error", None, f"the verifier failed: {type(exc).__name__}: {exc}")
        finally:
            self.admitted -= 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None
