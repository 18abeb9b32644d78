"""Worker processes for verifiers that can run away (a SymPy simplification may take minutes): each item has a
wall-clock limit that is enforced by killing the worker that runs it (pebble), never by signal.alarm, which only works
in a main thread and, where it fails, silently scores everything 0.

The pool caps how many items run at once (its workers) and how many wait (`max_queue`); beyond that a request is
refused at once with 429, as the model queues do. A verifier that raises, or a worker that dies, gives that item an
`error` verdict; the other items of the request are not touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

from pebble import ProcessExpired, ProcessPool

from arbiter.errors import QueueFull
from arbiter.verifiers.verdict import Verdict

log = logging.getLogger("arbiter.verifiers")
CHUNK = 16  # items per worker task at most: the round trip is shared, a slow item holds back few others
CHUNK_LIMITS = 2  # a chunk's deadline, in items' limits
Checker = Callable[[str, object, Any], Verdict]


def check_each(verifier: Checker, items: list[tuple[str, object]], rules: object) -> list[Verdict | str]:
    """In a worker: each item's verdict with the time it took, or, where the verifier raised, the exception's repr
    (for the server's log; the rest of the chunk goes on)."""
    verdicts: list[Verdict | str] = []
    for response, label in items:
        started = time.perf_counter()
        try:
            verdict = verifier(response, label, rules)
        except Exception as exc:  # the verifier's own failure on this item: reported on it, and in the log
            verdicts.append(f"{type(exc).__name__}: {exc}")
        else:
            verdicts.append(dataclasses.replace(verdict, seconds=time.perf_counter() - started))
    return verdicts


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
        Reserved items are then run with `run_all(..., reserved=True)`, which gives their room back; room for items
        that will not run after all goes back with `release`."""
        if self.admitted + count > self.workers + self.max_queue:
            raise QueueFull(
                f"the {self.name} pool has {self.admitted} items running or waiting and {count} more do not fit "
                f"(limit {self.workers + self.max_queue}); retry later",
                retry_after=1.0,
                details={"limit": "verifier_max_queue", "value": self.admitted + count},
            )
        self.admitted += count

    def release(self, count: int) -> None:
        self.admitted -= count

    async def run(
        self, verifier: Checker, response: str, label: object, rules: object, *, timeout: float, reserved: bool = False
    ) -> Verdict:
        """The verifier's verdict on one item, or a `timeout` or `error` verdict; QueueFull when the pool is full."""
        return (await self.run_all(verifier, [(response, label)], rules, timeout=timeout, reserved=reserved))[0]

    async def run_all(
        self,
        verifier: Checker,
        items: Sequence[tuple[str, object]],
        rules: object,
        *,
        timeout: float,
        reserved: bool = False,
    ) -> list[Verdict]:
        """Each item's verdict (response, label), in order. The items go to the workers in chunks, one task each,
        since a task's round trip costs as much as a whole GSM8K verification. A chunk must finish within twice one
        item's limit; one that does not (or whose worker dies) is run again an item at a time, each under its own
        limit, so that the item to blame alone gets `timeout` or `error`."""
        if not reserved:
            self.reserve(len(items))
        try:
            parts = max(min(self.workers, len(items)), -(-len(items) // CHUNK))
            size = -(-len(items) // parts) if items else 1
            chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
            done = await asyncio.gather(*(self._chunk(verifier, chunk, rules, timeout) for chunk in chunks))
            return [verdict for verdicts in done for verdict in verdicts]
        finally:
            self.release(len(items))

    async def _chunk(
        self, verifier: Checker, chunk: list[tuple[str, object]], rules: object, timeout: float
    ) -> list[Verdict]:
        if len(chunk) > 1:
            # Twice one item's limit: a chunk of slow but legitimate items rarely runs twice, and a runaway item
            # costs its request three limits at most (the chunk's, then its own).
            deadline = CHUNK_LIMITS * timeout
            try:
                future = self._started().schedule(check_each, args=(verifier, chunk, rules), timeout=deadline)
                return [self._verdict(v) for v in await asyncio.wrap_future(future)]
            except Exception as exc:  # a timeout, a dead worker, an item that does not pickle: blamed below
                log.info(
                    "a chunk of verifications overran or lost its worker; its items run again one by one",
                    extra={"verifier": self.name, "items": len(chunk), "reason": type(exc).__name__},
                )
        return list(await asyncio.gather(*(self._one(verifier, item, rules, timeout) for item in chunk)))

    async def _one(self, verifier: Checker, item: tuple[str, object], rules: object, timeout: float) -> Verdict:
        try:
            future = self._started().schedule(check_each, args=(verifier, [item], rules), timeout=timeout)
            return self._verdict((await asyncio.wrap_future(future))[0])
        except TimeoutError:
            return Verdict(0.0, "timeout", None, f"no verdict in {timeout:g} s; its worker was stopped", timeout)
        except ProcessExpired as exc:
            log.warning("verifier worker died", extra={"verifier": self.name, "reason": str(exc)})
            return Verdict(0.0, "error", None, f"the verifier's worker died ({exc})")
        except Exception as exc:  # the item could not reach a worker (it does not pickle, say)
            log.warning("verifier failed", extra={"verifier": self.name, "reason": repr(exc)})
            return Verdict(0.0, "error", None, f"the verifier failed: {type(exc).__name__}: {exc}")

    def _verdict(self, answer: Verdict | str) -> Verdict:
        if isinstance(answer, Verdict):
            return answer
        log.warning("verifier failed", extra={"verifier": self.name, "reason": answer})
        return Verdict(0.0, "error", None, f"the verifier failed: {answer}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None
