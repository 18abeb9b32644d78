"""Telemetry against reward hacking: is the policy learning the task, or learning the reward?

Per reward spec, over a sliding window of the most recent scored items:
  - reward mean and std (population std): a reward that climbs while nothing else changes is the first sign;
  - Pearson correlation of reward with response length in words: the most common hack is "write more";
  - agreement between components (e.g. a reward model and a judge scoring the same items): Spearman rank
    correlation and pairwise order agreement. Components that drift apart mean one of them is being gamed.
And on a fixed canary set of labelled pairs, measured on a schedule: the share of pairs the spec still orders
chosen > rejected, against the first measurement as the baseline, with an alert when it falls too far.

Everything here is plain numpy and thread-safe: batches arrive from request handlers, snapshots are taken by
the metrics scrape, and canary measurements run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger("arbiter.rewards.telemetry")

DEFAULT_CAPACITY = 2048
# All pairs of a window up to this many; past it a fixed-seed sample of this size (2048 items have 2.1M pairs).
DEFAULT_MAX_PAIRS = 50_000
# Float noise must not turn "dropped by exactly the threshold" into an alert.
_ALERT_EPS = 1e-9

# Whatever the scorer takes as a prompt: plain text or chat messages; the monitor only passes it through.
Prompt = Any
CanaryPair = tuple[Prompt, str, str]  # (prompt, chosen, rejected)
Scorer = Callable[[list[Prompt], list[str]], Awaitable[Any]]


# --- the math ------------------------------------------------------------------------------------------------


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the average of the ranks they span (what Spearman's rho needs)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.arange(n)
    ordered = x[order]
    starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(starts)[inverse]  # 1-based group of each item
    bounds = np.concatenate((np.flatnonzero(starts), [n]))  # group g spans sorted positions bounds[g-1]..bounds[g]-1
    return 0.5 * (bounds[group] + bounds[group - 1] + 1)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r; None for fewer than 3 items or a constant input, where r is undefined or meaningless."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        # ptp rather than variance: the mean of a constant array can miss it by an ulp and fake a variance.
        return None
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    if denom == 0 or not math.isfinite(denom):
        return None
    return float(np.clip(float(xc @ yc) / denom, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho: Pearson on average ranks."""
    return pearson(rankdata(x), rankdata(y))


def pairwise_agreement(
    x: np.ndarray, y: np.ndarray, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0
) -> tuple[float | None, int]:
    """Share of item pairs (i, j) that x and y order the same way, and how many pairs that is out of.

    Pairs tied in either are left out: a tie is no opinion, not a disagreement. All pairs when there are at most
    `max_pairs`, else that many sampled (i != j) with a fixed seed, so the same window gives the same number.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    if n < 2:
        return None, 0
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        j = rng.integers(0, n - 1, size=max_pairs)
        j = j + (j >= i)  # uniform over j != i
    sx = np.sign(x[i] - x[j])
    sy = np.sign(y[i] - y[j])
    untied = (sx != 0) & (sy != 0)
    pairs = int(untied.sum())
    if pairs == 0:
        return None, 0
    return float((sx[untied] == sy[untied]).mean()), pairs


# --- the sliding window --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentAgreement:
    """How two components of a spec agree on the items both scored. None where undefined (too few, constant)."""

    spearman: float | None
    pairwise_agreement: float | None
    items: int  # items in the window that both components scored
    pairs: int = 0  # untied pairs behind pairwise_agreement


@dataclass(frozen=True)
class WindowStats:
    count: int
    reward_mean: float | None  # None for an empty window (or one with no finite reward)
    reward_std: float | None  # population std (ddof=0)
    length_correlation: float | None  # None under 3 items or with zero variance in reward or length
    agreement: dict[str, ComponentAgreement] = field(default_factory=dict)  # keyed "a|b", a < b

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement_key(a: str, b: str) -> str:
    a, b = sorted((a, b))
    return f"{a}|{b}"


class SlidingWindow:
    """The last `capacity` scored items of one spec: reward, length, and each component's score.

    A ring buffer of fixed size, so memory and the cost of `stats()` do not grow with traffic. A component
    missing from a batch is stored as NaN for those items; agreement is computed where both are present.
    Non-finite rewards are stored but left out of the reward statistics.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.max_pairs = max_pairs
        self.seed = seed
        self._lock = threading.Lock()
        self._rewards = np.full(capacity, np.nan)
        self._lengths = np.full(capacity, np.nan)
        self._components: dict[str, np.ndarray] = {}
        self._head = 0  # next slot to write
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, rewards: np.ndarray, lengths: np.ndarray, components: Mapping[str, np.ndarray] | None = None) -> None:
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
        n = rewards.size
        if lengths.size != n:
            raise ValueError(f"{n} rewards but {lengths.size} lengths")
        batch: dict[str, np.ndarray] = {}
        for name, values in (components or {}).items():
            if "|" in name:
                raise ValueError(f"component name {name!r} may not contain '|' (it joins agreement keys)")
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if values.size != n:
                raise ValueError(f"{n} rewards but {values.size} scores from component {name!r}")
            batch[name] = values
        if n == 0:
            return
        if n > self.capacity:  # only the newest fit
            rewards, lengths = rewards[-self.capacity :], lengths[-self.capacity :]
            batch = {k: v[-self.capacity :] for k, v in batch.items()}
            n = self.capacity
        with self._lock:
            slots = (self._head + np.arange(n)) % self.capacity
            self._rewards[slots] = rewards
            self._lengths[slots] = lengths
            for name, values in batch.items():
                column = self._components.get(name)
                if column is None:
                    column = self._components[name] = np.full(self.capacity, np.nan)
                column[slots] = values
            for name in [k for k in self._components if k not in batch]:
                column = self._components[name]
                column[slots] = np.nan
                if np.isnan(column).all():  # evicted entirely: forget it, so its agreement series ends
                    del self._components[name]
            self._head = int((self._head + n) % self.capacity)
            self._count = min(self._count + n, self.capacity)

    def stats(self) -> WindowStats:
        # Copy under the lock, compute outside it: request threads must not wait on a scrape's sorting.
        with self._lock:
            count = self._count
            rewards = self._rewards[:count].copy()
            lengths = self._lengths[:count].copy()
            components = {k: v[:count].copy() for k, v in self._components.items()}
        # Order within the window does not matter to any statistic, so the ring is read as it lies.
        finite = np.isfinite(rewards)
        r = rewards[finite]
        mean = float(r.mean()) if r.size else None
        std = float(r.std()) if r.size else None
        length_ok = finite & np.isfinite(lengths)
        length_correlation = pearson(rewards[length_ok], lengths[length_ok])
        agreement: dict[str, ComponentAgreement] = {}
        names = sorted(components)
        for ai, a in enumerate(names):
            for b in names[ai + 1 :]:
                both = np.isfinite(components[a]) & np.isfinite(components[b])
                x, y = components[a][both], components[b][both]
                share, pairs = pairwise_agreement(x, y, self.max_pairs, self.seed)
                agreement[agreement_key(a, b)] = ComponentAgreement(
                    spearman=spearman(x, y), pairwise_agreement=share, items=int(both.sum()), pairs=pairs
                )
        return WindowStats(count, mean, std, length_correlation, agreement)


# --- the canary set ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryReport:
    accuracy: float  # share of pairs scored chosen > rejected (a tie counts as wrong)
    pairs: int
    baseline: float  # the first measurement's accuracy, unless one was given
    drop: float  # baseline - accuracy: positive when the spec got worse
    alert: bool  # drop > threshold
    measured_at: float  # unix seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CanaryMonitor:
    """Scores a fixed set of labelled pairs on demand and watches the accuracy against a baseline.

    A reward spec that starts disagreeing with labels it used to get right has drifted: its model was swapped,
    a judge's backend changed, or a rule's threshold moved. The canaries do not change, so the accuracy can.
    """

    def __init__(
        self,
        pairs: Sequence[CanaryPair],
        threshold: float = 0.05,
        history: int = 100,
        baseline: float | None = None,
    ) -> None:
        if not pairs:
            raise ValueError("a canary monitor needs at least one (prompt, chosen, rejected) pair")
        self.pairs: list[CanaryPair] = [(p, c, r) for p, c, r in pairs]
        self.threshold = threshold
        self._baseline = baseline
        self._reports: deque[CanaryReport] = deque(maxlen=history)
        # A thread lock, not an asyncio one: snapshots are read from other threads, and nothing awaits under it.
        self._lock = threading.Lock()

    @property
    def baseline(self) -> float | None:
        return self._baseline

    @property
    def latest(self) -> CanaryReport | None:
        with self._lock:
            return self._reports[-1] if self._reports else None

    @property
    def history(self) -> list[CanaryReport]:
        with self._lock:
            return list(self._reports)

    async def measure(self, score: Scorer) -> CanaryReport:
        """Scores every chosen and rejected response in one call and records the report."""
        n = len(self.pairs)
        prompts = [p for p, _, _ in self.pairs] * 2
        responses = [c for _, c, _ in self.pairs] + [r for _, _, r in self.pairs]
        scores = np.asarray(await score(prompts, responses), dtype=np.float64).reshape(-1)
        if scores.size != 2 * n:
            raise ValueError(f"the scorer returned {scores.size} scores for {2 * n} responses")
        accuracy = float((scores[:n] > scores[n:]).mean())  # NaN compares False: a broken score is a miss
        with self._lock:
            if self._baseline is None:
                self._baseline = accuracy
            drop = self._baseline - accuracy
            report = CanaryReport(
                accuracy=accuracy,
                pairs=n,
                baseline=self._baseline,
                drop=drop,
                alert=drop > self.threshold + _ALERT_EPS,
                measured_at=time.time(),
            )
            self._reports.append(report)
        if report.alert:
            log.warning(
                "canary accuracy dropped",
                extra={"accuracy": accuracy, "baseline": report.baseline, "drop": drop, "threshold": self.threshold},
            )
        return report

    async def run_every(self, seconds: float, score: Scorer) -> None:
        """Measures now and then every `seconds` until cancelled. A failed measurement is logged and skipped:
        a judge backend that is down for a minute must not end the monitoring for good."""
        if seconds <= 0:
            raise ValueError(f"the interval must be positive, got {seconds}")
        while True:
            try:
                await self.measure(score)
            except Exception:
                log.exception("canary measurement failed")
            await asyncio.sleep(seconds)

    def to_dict(self) -> dict[str, Any]:
        latest, history = self.latest, self.history
        return {
            "pairs": len(self.pairs),
            "threshold": self.threshold,
            "baseline": self.baseline,
            "latest": latest.to_dict() if latest else None,
            "history": [r.to_dict() for r in history],
        }


# --- one spec ------------------------------------------------------------------------------------------------


class SpecTelemetry:
    """Everything watched for one reward spec: its window of recent items and, optionally, its canaries."""

    def __init__(
        self,
        spec: str,
        capacity: int = DEFAULT_CAPACITY,
        canary: CanaryMonitor | None = None,
        max_pairs: int = DEFAULT_MAX_PAIRS,
    ) -> None:
        self.spec = spec
        self.window = SlidingWindow(capacity, max_pairs=max_pairs)
        self.canary = canary

    def observe(
        self, rewards: np.ndarray, lengths: np.ndarray, components: Mapping[str, np.ndarray] | None = None
    ) -> None:
        self.window.add(rewards, lengths, components)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: the window's statistics, plus the canary's latest report and history (None without one)."""
        return {
            "spec": self.spec,
            "capacity": self.window.capacity,
            **self.window.stats().to_dict(),
            "canary": self.canary.to_dict() if self.canary else None,
        }

    def export(self, metrics: RewardMetrics) -> dict[str, Any]:
        """Refreshes the gauges from a fresh snapshot and returns it, so one computation serves both."""
        snap = self.snapshot()
        metrics.refresh(snap)
        return snap


# --- Prometheus ----------------------------------------------------------------------------------------------


def _value(x: float | None) -> float:
    # An undefined statistic is NaN rather than a stale or made-up number: Grafana draws a gap.
    return math.nan if x is None else float(x)


class RewardMetrics:
    """The reward telemetry gauges, labelled by spec. Build with `register_metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.mean = Gauge("arbiter_reward_mean", "Reward mean over the sliding window", ["spec"], registry=r)
        self.std = Gauge("arbiter_reward_std", "Reward std (population) over the sliding window", ["spec"], registry=r)
        self.length_correlation = Gauge(
            "arbiter_reward_length_correlation",
            "Pearson correlation of reward with response length in words, over the window",
            ["spec"],
            registry=r,
        )
        self.agreement = Gauge(
            "arbiter_reward_component_agreement",
            "Agreement between two reward components over the window: Spearman rho or pairwise order agreement",
            ["spec", "a", "b", "measure"],
            registry=r,
        )
        self.canary_accuracy = Gauge(
            "arbiter_reward_canary_accuracy", "Share of canary pairs scored chosen > rejected", ["spec"], registry=r
        )
        self.canary_baseline = Gauge(
            "arbiter_reward_canary_baseline", "Canary accuracy the alert compares against", ["spec"], registry=r
        )
        self.canary_alert = Gauge(
            "arbiter_reward_canary_alert", "1 when canary accuracy fell more than the threshold", ["spec"], registry=r
        )
        self.window_items = Gauge("arbiter_reward_window_items", "Items in the sliding window", ["spec"], registry=r)
        self._lock = threading.Lock()
        self._pairs: dict[str, set[tuple[str, str]]] = {}  # the agreement series set per spec, to drop stale ones

    def refresh(self, snapshot: Mapping[str, Any]) -> None:
        """Sets every gauge of `snapshot["spec"]` from a `SpecTelemetry.snapshot()`."""
        spec = str(snapshot["spec"])
        self.mean.labels(spec).set(_value(snapshot["reward_mean"]))
        self.std.labels(spec).set(_value(snapshot["reward_std"]))
        self.length_correlation.labels(spec).set(_value(snapshot["length_correlation"]))
        self.window_items.labels(spec).set(snapshot["count"])
        pairs: set[tuple[str, str]] = set()
        for key, agreement in snapshot["agreement"].items():
            a, b = key.split("|", 1)
            pairs.add((a, b))
            self.agreement.labels(spec, a, b, "spearman").set(_value(agreement["spearman"]))
            self.agreement.labels(spec, a, b, "pairwise").set(_value(agreement["pairwise_agreement"]))
        with self._lock:
            stale = self._pairs.get(spec, set()) - pairs
            self._pairs[spec] = pairs
        for a, b in stale:  # a component that left the window leaves the dashboard too
            for measure in ("spearman", "pairwise"):
                with contextlib.suppress(KeyError):
                    self.agreement.remove(spec, a, b, measure)
        canary = snapshot.get("canary") or {}
        latest = canary.get("latest")
        if latest is not None:  # no series at all until the first measurement, rather than a misleading 0
            self.canary_accuracy.labels(spec).set(latest["accuracy"])
            self.canary_baseline.labels(spec).set(latest["baseline"])
            self.canary_alert.labels(spec).set(1.0 if latest["alert"] else 0.0)


def register_metrics(registry: CollectorRegistry) -> RewardMetrics:
    """Creates the reward telemetry gauges in `registry` (the server's own, next to the request metrics)."""
    return RewardMetrics(registry)
