"""Dynamic batching across requests, in the manner of text-embeddings-inference's router.

Requests put their token sequences in one bounded queue per model. A worker thread takes the oldest of what is
waiting (after at most `max_wait` for more to arrive; a few batches' worth), sorts it by length, cuts it into
batches under a padded-token budget, runs them, and routes each score back to its request. A full queue refuses
new work at once (429) rather than letting latency grow without bound; work whose caller has gone away is dropped
unrun. Models that share the cores share a lock (`cores`): one batch runs at a time, with every thread, instead
of two batches thrashing each other's caches and thread pools.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from arbiter.errors import QueueFull

RunBatch = Callable[[list[Sequence[int]]], np.ndarray]


@dataclass
class BatchStats:
    """What the worker reports after each batch, for metrics."""

    size: int
    padded_tokens: int
    real_tokens: int
    seconds: float


class BatchObserver(Protocol):
    """Told about every batch run and every sequence dropped unrun (the server's metrics)."""

    def observe_batch(self, stats: BatchStats) -> None: ...

    def observe_dropped(self, sequences: int) -> None: ...


@dataclass(eq=False)
class _Job:
    sequences: Sequence[Sequence[int]]
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    columns: int  # a model with several objectives gives a row of outputs per sequence
    scores: np.ndarray = field(init=False)
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.scores = np.empty((len(self.sequences), *job_row(self.columns)), dtype=np.float64)
        self.remaining = len(self.sequences)

    def abandoned(self) -> bool:
        return self.future.done()  # cancelled by its caller (disconnect, deadline) or failed already


# What the worker takes from the queue at a time: the oldest sequences, up to this many batches' worth of real
# tokens, sorted and cut into batches. Taking the whole queue pads less, but a sequence that arrives while a long
# window runs waits for all of it and then, if long, for every shorter one of the next: at 16 clients sending 8
# texts of up to 512 tokens (bench/serve_throughput.py, 2 cores) p99 was 1.98x p50 with the whole queue and 1.46x
# with 4 batches' worth, for 5.5% fewer sequences/s (padding 16% instead of 2%).
WINDOW_BATCHES = 4


class Batcher:
    def __init__(
        self,
        run: RunBatch,
        max_batch_tokens: int,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        observer: BatchObserver | None = None,
        name: str = "model",
        columns: int = 1,
        cores: AbstractContextManager[object] | None = None,
        window_tokens: int | None = None,
    ) -> None:
        """`window_tokens`: real tokens taken from the queue at a time (default WINDOW_BATCHES batches' worth)."""
        self._run, self._observer, self.columns = run, observer, columns
        self.window_tokens = window_tokens or max_batch_tokens * WINDOW_BATCHES
        self._cores = cores or nullcontext()
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.max_wait_s, self.max_queue = max_wait_s, max_queue
        self._queue: deque[tuple[_Job, int]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._seconds_per_sequence = 0.0  # of the last window, for Retry-After
        self._worker = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def score(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = _Job(sequences, loop.create_future(), loop, self.columns)
        with self._ready:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if len(self._queue) + len(sequences) > self.max_queue:
                raise QueueFull(
                    f"the queue holds {len(self._queue)} sequences (limit {self.max_queue}); retry later",
                    retry_after=self._retry_after(len(self._queue) + len(sequences) - self.max_queue),
                )
            self._queue.extend((job, i) for i in range(len(sequences)))
            self._ready.notify()
        return await job.future

    def _retry_after(self, shortfall: int) -> float:
        """Seconds until `shortfall` more sequences have left the queue, at the last window's rate: the queue is
        taken oldest first, a window at a time, so one window's time says little of a deep queue's."""
        return max(1.0, round(shortfall * self._seconds_per_sequence, 1))

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._worker.join(timeout=10)

    def _work(self) -> None:
        while True:
            window = self._take()
            if window is None:
                return
            started = time.perf_counter()
            for batch in self._batches(window):
                self._execute(batch)
            if window:
                self._seconds_per_sequence = (time.perf_counter() - started) / len(window)

    def _take(self) -> list[tuple[_Job, int]] | None:
        """The oldest waiting (see _oldest), once the queue is non-empty and max_wait has passed or a batch is full."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._closed and not self._queue:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            window = self._oldest()
        return self._live(window)

    def _oldest(self) -> list[tuple[_Job, int]]:
        """The sequences that have waited longest, up to `window_tokens` real tokens (one at least, however long);
        the caller holds the lock."""
        budget = self.window_tokens
        window: list[tuple[_Job, int]] = []
        tokens = 0
        while self._queue:
            job, i = self._queue[0]
            length = len(job.sequences[i])
            if window and tokens + length > budget:
                break
            window.append(self._queue.popleft())
            tokens += length
        return window

    def _live(self, items: list[tuple[_Job, int]]) -> list[tuple[_Job, int]]:
        live = [(job, i) for job, i in items if not job.abandoned()]
        if len(live) < len(items) and self._observer:
            self._observer.observe_dropped(len(items) - len(live))
        return live

    def _batches(self, window: list[tuple[_Job, int]]) -> list[list[tuple[_Job, int]]]:
        window.sort(key=lambda item: len(item[0].sequences[item[1]]))
        batches: list[list[tuple[_Job, int]]] = []
        current: list[tuple[_Job, int]] = []
        for item in window:
            length = len(item[0].sequences[item[1]])
            # Sorted ascending, so this item's length is the padded width if it joins the batch.
            if current and (length * (len(current) + 1) > self.max_batch_tokens or len(current) >= self.max_batch_size):
                batches.append(current)
                current = []
            current.append(item)
        if current:
            batches.append(current)
        return batches

    def _execute(self, batch: list[tuple[_Job, int]]) -> None:
        with self._cores:  # waiting for another model's turn is neither this batch's time nor a reason to run it
            batch = self._live(batch)
            if not batch:
                return
            sequences = [job.sequences[i] for job, i in batch]
            started = time.perf_counter()
            try:
                scores = self._run(sequences)
                if scores.shape[:1] != (len(batch),) or scores.shape[1:] != job_row(self.columns):
                    raise RuntimeError(f"the model gave {scores.shape} outputs for {len(batch)} sequences")
            except Exception as exc:  # a model failure fails the requests in this batch, not the worker
                for job in {job for job, _ in batch}:
                    job.loop.call_soon_threadsafe(_fail, job.future, exc)
                return
            seconds = time.perf_counter() - started
        for (job, i), score in zip(batch, scores, strict=True):
            job.scores[i] = score
            job.remaining -= 1
            if job.remaining == 0:
                job.loop.call_soon_threadsafe(_finish, job.future, job.scores)
        if self._observer:
            width, real = max(len(s) for s in sequences), sum(len(s) for s in sequences)
            self._observer.observe_batch(BatchStats(len(batch), width * len(batch), real, seconds))


def job_row(columns: int) -> tuple[int, ...]:
    """The shape of one sequence's outputs: a score, or a row of `columns`."""
    return () if columns == 1 else (columns,)


def _finish(future: asyncio.Future[np.ndarray], scores: np.ndarray) -> None:
    if not future.done():
        future.set_result(scores)


def _fail(future: asyncio.Future[np.ndarray], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
