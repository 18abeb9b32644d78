"""The batcher on its own, around a numpy stand-in for the model: what it runs, in which batches, and who gets what.

Gates make the worker's windows deterministic: a gate sequence blocks the model until the test releases it, so all
that the test queues meanwhile is taken as one window. A wait that should never be reached is bounded by HANG_GUARD_S
so that a broken batcher fails the test instead of hanging it; no assertion is about time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from arbiter.errors import QueueFull
from arbiter.service.runtime.batcher import Batcher, BatchStats

HANG_GUARD_S = 60.0
WIDTH, SIZE = 4, 8  # max_batch_tokens = WIDTH * SIZE: eight sequences of four tokens, or fewer longer ones


class ModelFailure(Exception):
    pass


@dataclass
class Gate:
    token: int
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def sequence(self) -> list[int]:
        return [self.token]


class Model:
    """Scores a sequence by the mean of its tokens over a padded matrix, as a real model pads its batch.

    Every sequence below is one token repeated, a number that names its request and position, so its score says
    which sequence it was. Batches with a gate's token wait for the gate; those with a failing token raise."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.gates: dict[int, Gate] = {}
        self.failing: set[int] = set()

    def gate(self) -> Gate:
        gate = Gate(token=-1 - len(self.gates))
        self.gates[gate.token] = gate
        return gate

    def __call__(self, batch: list[Sequence[int]]) -> np.ndarray:
        for sequence in batch:
            if gate := self.gates.get(sequence[0]):
                gate.entered.set()
                assert gate.release.wait(HANG_GUARD_S), "the test never released its gate"
        if not any(sequence[0] in self.gates for sequence in batch):
            self.batches.append([tuple(sequence) for sequence in batch])
        if any(sequence[0] in self.failing for sequence in batch):
            raise ModelFailure("the model failed on this batch")
        width = max(len(sequence) for sequence in batch)
        tokens, mask = np.zeros((len(batch), width)), np.zeros((len(batch), width))
        for row, sequence in enumerate(batch):
            tokens[row, : len(sequence)], mask[row, : len(sequence)] = sequence, 1.0
        return (tokens * mask).sum(axis=1) / mask.sum(axis=1)

    @property
    def ran(self) -> list[tuple[int, ...]]:
        return [sequence for batch in self.batches for sequence in batch]


class Observer:
    def __init__(self) -> None:
        self.stats: list[BatchStats] = []
        self.dropped: list[int] = []

    def observe_batch(self, stats: BatchStats) -> None:
        self.stats.append(stats)

    def observe_dropped(self, sequences: int) -> None:
        self.dropped.append(sequences)


def request(number: int, lengths: Sequence[int]) -> list[list[int]]:
    """Sequence i of request `number` is its name, 1000 * number + i + 1, repeated to the length given."""
    return [[1000 * number + i + 1] * length for i, length in enumerate(lengths)]


def expected(sequences: Sequence[Sequence[int]]) -> list[float]:
    return [float(sequence[0]) for sequence in sequences]


@contextmanager
def batcher(model: Model, observer: Observer | None = None, **limits: Any) -> Iterator[Batcher]:
    settings: dict[str, Any] = {
        "max_batch_tokens": WIDTH * SIZE,
        "max_batch_size": SIZE,
        "max_wait_s": 0.01,
        "max_queue": 10_000,
        "window_tokens": 10**9,  # all that is queued is one window, unless a test says otherwise
    }
    b = Batcher(model, observer=observer, name="test", **(settings | limits))
    try:
        yield b
    finally:
        for gate in model.gates.values():  # a failed test must not leave the worker waiting on its gate
            gate.release.set()
        b.close()


async def settle(*work: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*work), HANG_GUARD_S)


async def hold(b: Batcher, gate: Gate) -> asyncio.Task[np.ndarray]:
    """Blocks the worker on `gate`, with the queue empty behind it."""
    held = asyncio.ensure_future(b.score([gate.sequence]))
    assert await asyncio.to_thread(gate.entered.wait, HANG_GUARD_S)
    assert b.depth == 0
    return held


async def queued(b: Batcher, *requests: Sequence[Sequence[int]]) -> list[asyncio.Task[np.ndarray]]:
    tasks = [asyncio.ensure_future(b.score(sequences)) for sequences in requests]
    await asyncio.sleep(0)  # each task runs up to its await: its sequences are in the queue
    assert b.depth == sum(len(sequences) for sequences in requests)
    return tasks


def refusal(b: Batcher, sequences: Sequence[Sequence[int]]) -> QueueFull:
    """score() must refuse at its first step, before it waits on anything (the worker is held)."""
    step = b.score(sequences)
    try:
        with pytest.raises(QueueFull) as refused:
            step.send(None)
    finally:
        step.close()
    return refused.value


def test_batches_keep_to_the_padded_token_budget_and_are_full() -> None:
    rng = np.random.default_rng(7)
    requests = [request(n, rng.integers(1, 3 * WIDTH, size=int(rng.integers(1, 12)))) for n in range(6)]
    over_long = request(6, [WIDTH * SIZE + 5])
    model, observer = Model(), Observer()

    async def scenario() -> list[np.ndarray]:
        with batcher(model, observer) as b:
            gate = model.gate()
            held = await hold(b, gate)
            tasks = await queued(b, *requests, over_long)
            gate.release.set()
            return (await settle(held, *tasks))[1:]

    results = asyncio.run(scenario())
    for sequences, scores in zip([*requests, over_long], results, strict=True):
        assert scores.tolist() == expected(sequences)
    everything = [tuple(s) for sequences in [*requests, over_long] for s in sequences]
    assert sorted(model.ran) == sorted(everything)  # each sequence ran once

    budget = WIDTH * SIZE
    for batch in model.batches:
        padded = max(len(s) for s in batch) * len(batch)
        assert len(batch) <= SIZE
        assert padded <= budget or len(batch) == 1, f"{len(batch)} sequences padded to {padded} tokens"
    assert [tuple(over_long[0])] in model.batches  # too long for any budget: run alone
    # One window, cut greedily: the first sequence of each batch would not have fit in the one before.
    for batch, following in zip(model.batches, model.batches[1:], strict=False):
        assert len(batch) == SIZE or len(following[0]) * (len(batch) + 1) > budget
    assert len(model.batches) < len(everything) // 2  # it did batch

    ran_stats = observer.stats[1:]  # the first is the gate's
    assert [(s.size, s.padded_tokens, s.real_tokens) for s in ran_stats] == [
        (len(batch), max(map(len, batch)) * len(batch), sum(map(len, batch))) for batch in model.batches
    ]
    assert observer.dropped == []


def test_a_deep_queue_is_taken_oldest_first_a_window_at_a_time() -> None:
    # Queued oldest first: long sequences, then short ones. Sorting the whole queue would run every short one first;
    # a window of 36 real tokens takes the two old requests (36 tokens) before any of the new ones.
    old = [request(0, [9, 9]), request(1, [9, 9])]
    new = [request(2, [2] * 8), request(3, [1] * 8)]
    model = Model()

    async def scenario() -> list[np.ndarray]:
        with batcher(model, max_batch_tokens=WIDTH * SIZE, window_tokens=36) as b:
            gate = model.gate()
            held = await hold(b, gate)
            tasks = await queued(b, *old, *new)
            gate.release.set()
            return (await settle(held, *tasks))[1:]

    for sequences, scores in zip([*old, *new], asyncio.run(scenario()), strict=True):
        assert scores.tolist() == expected(sequences)
    requests_of = [{s[0] // 1000 for s in batch} for batch in model.batches]
    first_new = next(n for n, names in enumerate(requests_of) if names & {2, 3})
    assert all(names <= {0, 1} for names in requests_of[:first_new]) and first_new > 0
    assert all(names <= {2, 3} for names in requests_of[first_new:])  # the old ones all ran first
    # within the second window (24 tokens) the shorter run first, as in any window
    assert [len(s) for batch in model.batches[first_new:] for s in batch] == [1] * 8 + [2] * 8


def test_no_batch_holds_more_than_max_batch_size() -> None:
    model = Model()
    short = request(0, [1] * 22)

    async def scenario() -> np.ndarray:
        with batcher(model, max_batch_tokens=10_000, max_batch_size=5) as b:
            gate = model.gate()
            held = await hold(b, gate)
            (task,) = await queued(b, short)
            gate.release.set()
            return (await settle(held, task))[1]

    assert asyncio.run(scenario()).tolist() == expected(short)
    assert [len(batch) for batch in model.batches] == [5, 5, 5, 5, 2]


def test_each_batch_is_sorted_by_length_and_scores_go_back_to_their_requests() -> None:
    # Longest first and interleaved across requests, so sorting moves every sequence away from where it came.
    requests = [request(0, [9, 1, 7]), request(1, [8, 2]), request(2, [3, 6, 4, 5]), request(3, [10])]
    model = Model()

    async def scenario() -> list[np.ndarray]:
        with batcher(model, max_batch_tokens=12, max_batch_size=3) as b:
            gate = model.gate()
            held = await hold(b, gate)
            tasks = await queued(b, *requests)
            gate.release.set()
            return (await settle(held, *tasks))[1:]

    results = asyncio.run(scenario())
    for sequences, scores in zip(requests, results, strict=True):
        assert scores.tolist() == expected(sequences)
    lengths = [[len(s) for s in batch] for batch in model.batches]
    assert all(batch == sorted(batch) for batch in lengths)
    assert [n for batch in lengths for n in batch] == list(range(1, 11))  # one window, sorted as a whole
    assert any(len(batch) > 1 for batch in lengths)


def test_concurrent_requests_each_get_their_own_scores_in_order() -> None:
    rng = np.random.default_rng(11)
    requests = [request(n, rng.integers(1, 20, size=int(rng.integers(1, 9)))) for n in range(40)]
    model = Model()

    async def scenario() -> list[np.ndarray]:
        with batcher(model, max_wait_s=0.002) as b:
            return await settle(*(b.score(sequences) for sequences in requests))

    for sequences, scores in zip(requests, asyncio.run(scenario()), strict=True):
        assert scores.tolist() == expected(sequences)
    assert len(model.batches) < sum(map(len, requests))  # requests shared batches


def test_a_cancelled_callers_sequences_are_dropped_unrun() -> None:
    """Cancelled while queued (dropped as the window is taken) and while its window runs (dropped at its batch)."""
    waiting, kept = request(0, [3, 3]), request(1, [2, 5])
    late = request(2, [WIDTH * SIZE])  # a batch of its own, after the gate's in the same window
    model, observer = Model(), Observer()

    async def scenario() -> np.ndarray:
        with batcher(model, observer) as b:
            first, second, third = model.gate(), model.gate(), model.gate()
            held = await hold(b, first)
            cancelled, kept_task = await queued(b, waiting, kept)
            cancelled.cancel()
            first.release.set()
            _, kept_scores = await settle(held, kept_task)

            held = await hold(b, second)
            gated, late_task = await queued(b, [third.sequence], late)
            second.release.set()
            assert await asyncio.to_thread(third.entered.wait, HANG_GUARD_S)  # running the window: late is next
            late_task.cancel()
            third.release.set()
            await settle(held, gated)
            for task in (cancelled, late_task):
                with pytest.raises(asyncio.CancelledError):
                    await task
            return kept_scores

    assert asyncio.run(scenario()).tolist() == expected(kept)
    assert not set(model.ran) & {tuple(s) for s in waiting + late}
    assert sorted(model.ran) == sorted(tuple(s) for s in kept)
    assert observer.dropped == [len(waiting), len(late)]


def test_a_full_queue_refuses_at_once_and_is_left_as_it_was() -> None:
    model = Model()
    three, two, one, another = request(0, [2] * 3), request(1, [2] * 2), request(2, [4]), request(3, [1])

    async def scenario() -> list[np.ndarray]:
        with batcher(model, max_queue=4) as b:
            gate = model.gate()
            held = await hold(b, gate)
            (first,) = await queued(b, three)
            refused = refusal(b, two)  # 3 + 2 > 4: refused whole, not in part
            assert refused.retry_after is not None and refused.retry_after >= 1.0
            assert refused.status == 429
            assert b.depth == 3
            fits = asyncio.ensure_future(b.score(one))
            await asyncio.sleep(0)
            assert b.depth == 4
            refusal(b, another)
            assert b.depth == 4
            gate.release.set()
            return (await settle(held, first, fits))[1:]

    assert [scores.tolist() for scores in asyncio.run(scenario())] == [expected(three), expected(one)]
    assert sorted(model.ran) == sorted(tuple(s) for s in three + one)  # nothing refused ever ran


def test_retry_after_is_the_time_to_make_room_at_the_last_windows_rate() -> None:
    # The first window is one gate sequence held for held_s, so the measured rate is at least held_s a sequence
    # (a lower bound set by the test, not a timing). A request 6 sequences short of room must then wait 6 of those;
    # the time of one window alone (what Retry-After used to be) would say held_s, rounded up to 1 s.
    held_s, model = 0.5, Model()
    full, short_by_six = request(0, [1] * 10), request(1, [1] * 6)

    async def scenario() -> float | None:
        with batcher(model, max_queue=10) as b:
            first = model.gate()
            timed = await hold(b, first)
            await asyncio.sleep(held_s)
            first.release.set()
            await settle(timed)
            second = model.gate()
            held = await hold(b, second)
            (filled,) = await queued(b, full)
            retry_after = refusal(b, short_by_six).retry_after
            second.release.set()
            await settle(held, filled)
            return retry_after

    retry_after = asyncio.run(scenario())
    assert retry_after is not None and retry_after >= round(6 * held_s, 1)  # Retry-After is rounded to 0.1 s


def test_a_failing_batch_fails_only_its_requests_and_the_worker_goes_on() -> None:
    # max_batch_size 2 cuts the window by length into [short], [poisoned + shares], [long].
    short, poisoned, shares, long = request(0, [1, 1]), request(1, [5]), request(2, [5]), request(3, [9, 9])
    after = request(4, [3])
    model = Model()
    model.failing.add(poisoned[0][0])

    async def scenario() -> tuple[list[Any], list[np.ndarray]]:
        with batcher(model, max_batch_size=2) as b:
            gate = model.gate()
            held = await hold(b, gate)
            tasks = await queued(b, short, poisoned, shares, long)
            gate.release.set()
            outcomes = await asyncio.wait_for(asyncio.gather(held, *tasks, return_exceptions=True), HANG_GUARD_S)
            return outcomes[1:], await settle(b.score(after))

    (short_scores, poisoned_error, shares_error, long_scores), after_scores = asyncio.run(scenario())
    assert isinstance(poisoned_error, ModelFailure)
    assert shares_error is poisoned_error  # the other request in that batch fails with the same error
    assert short_scores.tolist() == expected(short)
    assert long_scores.tolist() == expected(long)  # the batch after the failure still ran
    assert after_scores[0].tolist() == expected(after)  # and so does later work


def test_close_runs_what_is_queued_then_stops() -> None:
    """The worker waits up to max_wait_s for a fuller batch; close() cuts that short and runs everything queued."""
    model = Model()
    first, second = request(0, [3, 1]), request(1, [2])

    async def scenario() -> list[np.ndarray]:
        b = Batcher(model, max_batch_tokens=64, max_batch_size=64, max_wait_s=3600, max_queue=100, name="closing")
        tasks = await queued(b, first, second)
        await asyncio.to_thread(b.close)
        assert not any(thread.name == "batcher-closing" for thread in threading.enumerate())
        with pytest.raises(RuntimeError, match="closed"):
            await b.score(request(2, [1]))
        return await settle(*tasks)

    assert [scores.tolist() for scores in asyncio.run(scenario())] == [expected(first), expected(second)]
    assert model.batches == [[tuple(first[1]), tuple(second[0]), tuple(first[0])]]  # one batch, by length


def test_close_while_a_batch_runs_still_runs_what_is_queued_behind_it() -> None:
    model = Model()
    behind, probe = request(0, [2, 2]), request(1, [1])

    async def closing_took_effect(b: Batcher) -> None:
        # With the queue full, score() refuses with QueueFull until close() has taken effect, then with RuntimeError.
        while True:
            step = b.score(probe)
            try:
                step.send(None)
            except QueueFull:
                await asyncio.sleep(0.001)
            except RuntimeError:
                return
            finally:
                step.close()

    async def scenario() -> np.ndarray:
        with batcher(model, max_queue=len(behind)) as b:
            gate = model.gate()
            held = await hold(b, gate)
            (task,) = await queued(b, behind)
            closing = asyncio.ensure_future(asyncio.to_thread(b.close))
            await asyncio.wait_for(closing_took_effect(b), HANG_GUARD_S)
            gate.release.set()
            await asyncio.wait_for(closing, HANG_GUARD_S)
            return (await settle(held, task))[1]

    assert asyncio.run(scenario()).tolist() == expected(behind)
    assert model.ran == [tuple(s) for s in behind]


class Logged(Model):
    """A model that writes when each of its batches starts and ends into a log it shares with other models."""

    def __init__(self, name: str, events: list[str]) -> None:
        super().__init__()
        self.name, self.events, self.entered = name, events, threading.Event()

    def __call__(self, batch: list[Sequence[int]]) -> np.ndarray:
        self.events.append(f"{self.name} starts")
        self.entered.set()
        scores = super().__call__(batch)
        self.events.append(f"{self.name} ends")
        return scores


def test_models_that_share_the_cores_run_one_batch_at_a_time() -> None:
    """Two batchers (two models) with one `cores` lock: the second model's batch waits for the first's to end."""

    def run(cores: threading.Lock | None) -> list[str]:
        events: list[str] = []
        first, second = Logged("first", events), Logged("second", events)

        async def scenario() -> None:
            with batcher(first, cores=cores) as a, batcher(second, cores=cores) as b:
                gate = first.gate()
                held = await hold(a, gate)
                waiting = asyncio.ensure_future(b.score(request(1, [2])))
                # Long enough for the second worker to reach the model if nothing stops it; with the lock it cannot.
                await asyncio.to_thread(second.entered.wait, 1.0)
                gate.release.set()
                await settle(held, waiting)

        asyncio.run(scenario())
        return events

    assert run(threading.Lock()) == ["first starts", "first ends", "second starts", "second ends"]
    assert run(None)[:2] == ["first starts", "second starts"]  # without it they overlap: the check above can fail
