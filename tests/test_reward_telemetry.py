"""Reward telemetry on constructed inputs whose answers are known, and the dashboard against the code."""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from arbiter.rewards.telemetry import (
    CanaryMonitor,
    SlidingWindow,
    SpecTelemetry,
    pairwise_agreement,
    rankdata,
    register_metrics,
    spearman,
)

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "k8s" / "grafana" / "arbiter-rewards.json"


def _window(rewards, lengths=None, components=None, capacity=2048) -> SlidingWindow:
    w = SlidingWindow(capacity)
    rewards = np.asarray(rewards, dtype=float)
    w.add(rewards, np.arange(rewards.size) if lengths is None else lengths, components or {})
    return w


# --- the window's statistics ---------------------------------------------------------------------------------


def test_mean_and_std_by_hand():
    s = _window([1.0, 2.0, 3.0, 4.0]).stats()
    assert s.count == 4
    assert s.reward_mean == pytest.approx(2.5)
    assert s.reward_std == pytest.approx(math.sqrt(1.25))  # population: mean of (2.25, .25, .25, 2.25)


def test_empty_window():
    s = SlidingWindow().stats()
    assert (s.count, s.reward_mean, s.reward_std, s.length_correlation, s.agreement) == (0, None, None, None, {})


def test_length_correlation_exact():
    lengths = np.arange(1, 11, dtype=float)
    assert _window(3 * lengths + 2, lengths).stats().length_correlation == pytest.approx(1.0)
    assert _window(-0.5 * lengths, lengths).stats().length_correlation == pytest.approx(-1.0)
    # Symmetric about the middle length: every linear trend cancels.
    assert _window((lengths - 5.5) ** 2, lengths).stats().length_correlation == pytest.approx(0.0, abs=1e-12)


def test_length_correlation_undefined():
    assert _window([1.0, 2.0], [1, 2]).stats().length_correlation is None  # under 3 items
    assert _window([1.0, 2.0, 3.0], [5, 5, 5]).stats().length_correlation is None  # constant length
    assert _window([0.1, 0.1, 0.1, 0.1], [1, 2, 3, 4]).stats().length_correlation is None  # constant reward


def test_rankdata_averages_ties():
    assert rankdata(np.array([3.0, 1.0, 2.0, 2.0, 5.0, 2.0])).tolist() == [5.0, 1.0, 3.0, 3.0, 6.0, 3.0]


def test_agreement_monotone_and_reversed():
    rng = np.random.default_rng(0)
    rm = rng.normal(size=200)
    components = {"rm": rm, "judge": np.exp(rm), "contrarian": -(rm**3)}
    s = _window(rm, components=components).stats()
    assert set(s.agreement) == {"judge|rm", "contrarian|rm", "contrarian|judge"}
    same, reversed_ = s.agreement["judge|rm"], s.agreement["contrarian|rm"]
    assert (same.spearman, same.pairwise_agreement, same.items) == (pytest.approx(1.0), 1.0, 200)
    assert (reversed_.spearman, reversed_.pairwise_agreement) == (pytest.approx(-1.0), 0.0)
    assert same.pairs == 200 * 199 // 2  # all pairs, no ties


def test_pairwise_ignores_ties_and_samples_large_windows():
    # Pairs tied in either are no opinion: (0,1) tied in y; (0,2) and (1,2) agree.
    assert pairwise_agreement(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0])) == (1.0, 2)
    x = np.arange(1000.0)
    share, pairs = pairwise_agreement(x, x**2, max_pairs=5000)
    assert share == 1.0 and 4900 < pairs <= 5000  # sampled (i != j, no ties possible) rather than 499,500 pairs
    assert pairwise_agreement(x, -x, max_pairs=5000)[0] == 0.0
    # A half-and-half relation lands near a half.
    y = np.where(np.arange(1000) % 2 == 0, x, -x)
    assert pairwise_agreement(x, y, max_pairs=20000)[0] == pytest.approx(0.5, abs=0.03)


def test_spearman_with_ties_and_undefined():
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([10.0, 20.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0])) is None


def test_agreement_only_where_both_components_present():
    w = SlidingWindow(100)
    x = np.arange(10.0)
    w.add(x, x, {"rm": x, "judge": 2 * x})
    w.add(x, x, {"rm": x})  # no judge this time: these ten items do not count for the pair
    w.add(x, x, {"rm": -x, "judge": x})  # reversed, but only within this batch
    a = w.stats().agreement["judge|rm"]
    assert a.items == 20
    # Across batches: items 0..9 (batch 1) and 20..29 (batch 3). Within batch 1 all agree (45 pairs), within
    # batch 3 all disagree (45), across batches rm: x vs -x', judge: 2x vs x' — work it out by brute force.
    rm = np.concatenate([x, -x])
    judge = np.concatenate([2 * x, x])
    agree = total = 0
    for i in range(20):
        for j in range(i + 1, 20):
            s1, s2 = np.sign(rm[i] - rm[j]), np.sign(judge[i] - judge[j])
            if s1 and s2:
                total += 1
                agree += s1 == s2
    assert a.pairwise_agreement == pytest.approx(agree / total)


def test_window_evicts_old_items():
    w = SlidingWindow(capacity=5)
    w.add(np.full(4, 100.0), np.ones(4), {"old": np.ones(4), "rm": np.ones(4)})
    for r in (1.0, 2.0, 3.0):  # 7 items in all: the four 100s go, then... only 5 fit
        w.add(np.array([r]), np.array([r]), {"rm": np.array([r])})
    w.add(np.array([4.0, 5.0]), np.array([4.0, 5.0]), {"rm": np.array([4.0, 5.0])})
    s = w.stats()
    assert len(w) == s.count == 5
    assert s.reward_mean == pytest.approx(3.0)  # 1..5: no 100 left
    assert s.length_correlation == pytest.approx(1.0)
    assert s.agreement == {}  # "old" has left the window entirely, so there is no pair any more


def test_batch_larger_than_capacity_keeps_the_newest():
    w = SlidingWindow(capacity=3)
    w.add(np.arange(10.0), np.arange(10.0))
    s = w.stats()
    assert (s.count, s.reward_mean) == (3, pytest.approx(8.0))


def test_window_rejects_mismatched_batches():
    w = SlidingWindow()
    with pytest.raises(ValueError, match="lengths"):
        w.add(np.ones(3), np.ones(2), {})
    with pytest.raises(ValueError, match="component 'rm'"):
        w.add(np.ones(3), np.ones(3), {"rm": np.ones(4)})


def test_window_is_thread_safe():
    w = SlidingWindow(capacity=1000)
    errors: list[BaseException] = []

    def writer(value: float) -> None:
        try:
            for _ in range(200):
                w.add(np.full(7, value), np.full(7, 3.0), {"rm": np.full(7, value), "judge": np.full(7, -value)})
                w.stats()
        except BaseException as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(float(v),)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = w.stats()
    assert s.count == 1000 and 0.0 <= s.reward_mean <= 3.0


# --- canaries ------------------------------------------------------------------------------------------------

PAIRS = [(f"q{i}", f"good answer {i}", f"bad {i}") for i in range(20)]


class Scorer:
    """Scores "good" above "bad", except for the first `wrong` pairs, which it gets backwards."""

    def __init__(self) -> None:
        self.wrong = 0
        self.calls = 0
        self.fail_on: set[int] = set()

    async def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError("backend down")
        assert len(prompts) == len(responses) == 2 * len(PAIRS)
        out = []
        for p, r in zip(prompts, responses, strict=True):
            i = int(p[1:])
            good = r.startswith("good")
            out.append(float(good != (i < self.wrong)))
        return np.array(out)


def test_canary_accuracy_baseline_and_alert():
    scorer, monitor = Scorer(), CanaryMonitor(PAIRS, threshold=0.05, history=3)
    first = asyncio.run(monitor.measure(scorer))
    assert (first.accuracy, first.pairs, first.baseline, first.drop, first.alert) == (1.0, 20, 1.0, 0.0, False)
    scorer.wrong = 1  # 0.95: a drop of exactly the threshold is not more than it
    second = asyncio.run(monitor.measure(scorer))
    assert (second.accuracy, second.baseline, second.alert) == (0.95, 1.0, False)
    assert second.drop == pytest.approx(0.05)
    scorer.wrong = 2  # 0.90
    third = asyncio.run(monitor.measure(scorer))
    assert (third.accuracy, third.alert) == (0.9, True)
    assert third.drop == pytest.approx(0.1)
    scorer.wrong = 0
    fourth = asyncio.run(monitor.measure(scorer))
    assert not fourth.alert and monitor.baseline == 1.0
    assert monitor.latest == fourth
    assert monitor.history == [second, third, fourth]  # only the last 3 kept
    assert all(b.measured_at >= a.measured_at for a, b in zip(monitor.history, monitor.history[1:], strict=False))


def test_canary_baseline_from_first_measurement_even_if_imperfect():
    scorer = Scorer()
    scorer.wrong = 4  # 0.8 to start with
    monitor = CanaryMonitor(PAIRS, threshold=0.1)
    assert asyncio.run(monitor.measure(scorer)).baseline == 0.8
    scorer.wrong = 6  # 0.7: a drop of exactly 0.1 (float noise notwithstanding) is no alert
    assert not asyncio.run(monitor.measure(scorer)).alert
    scorer.wrong = 7
    assert asyncio.run(monitor.measure(scorer)).alert


def test_canary_ties_count_as_wrong_and_bad_scorers_are_refused():
    async def flat(prompts, responses):
        return np.zeros(len(responses))

    async def short(prompts, responses):
        return [1.0]

    monitor = CanaryMonitor(PAIRS)
    assert asyncio.run(monitor.measure(flat)).accuracy == 0.0
    with pytest.raises(ValueError, match="returned 1 scores for 40"):
        asyncio.run(monitor.measure(short))
    with pytest.raises(ValueError):
        CanaryMonitor([])


def test_run_every_measures_on_a_schedule_and_survives_errors():
    scorer = Scorer()
    scorer.fail_on = {1}  # the very first call raises
    monitor = CanaryMonitor(PAIRS)

    async def run() -> None:
        task = asyncio.create_task(monitor.run_every(0.01, scorer))
        for _ in range(500):
            await asyncio.sleep(0.005)
            if len(monitor.history) >= 2:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert scorer.calls >= 3
    assert len(monitor.history) >= 2
    assert monitor.baseline == 1.0  # from the first measurement that worked


# --- spec telemetry and Prometheus ---------------------------------------------------------------------------


def _telemetry() -> SpecTelemetry:
    t = SpecTelemetry("helpful", capacity=64, canary=CanaryMonitor(PAIRS))
    x = np.arange(1.0, 11.0)
    t.observe(x, 2 * x, {"rm": x, "judge": x**2})
    return t


def test_snapshot_is_json_ready():
    t = _telemetry()
    asyncio.run(t.canary.measure(Scorer()))
    snap = json.loads(json.dumps(t.snapshot()))
    assert snap["spec"] == "helpful" and snap["count"] == 10 and snap["capacity"] == 64
    assert snap["reward_mean"] == pytest.approx(5.5)
    assert snap["length_correlation"] == pytest.approx(1.0)
    assert snap["agreement"]["judge|rm"]["pairwise_agreement"] == 1.0
    assert snap["canary"]["latest"]["accuracy"] == 1.0 and len(snap["canary"]["history"]) == 1
    assert SpecTelemetry("bare").snapshot()["canary"] is None


def test_prometheus_gauges_after_refresh():
    registry = CollectorRegistry()
    metrics = register_metrics(registry)
    t = _telemetry()
    t.export(metrics)  # before any canary measurement: no canary series yet
    get = registry.get_sample_value
    assert get("arbiter_reward_canary_accuracy", {"spec": "helpful"}) is None

    scorer = Scorer()
    asyncio.run(t.canary.measure(scorer))
    scorer.wrong = 5
    asyncio.run(t.canary.measure(scorer))
    t.export(metrics)
    spec = {"spec": "helpful"}
    assert get("arbiter_reward_mean", spec) == pytest.approx(5.5)
    assert get("arbiter_reward_std", spec) == pytest.approx(np.arange(1.0, 11.0).std())
    assert get("arbiter_reward_length_correlation", spec) == pytest.approx(1.0)
    assert get("arbiter_reward_window_items", spec) == 10
    pair = {**spec, "a": "judge", "b": "rm"}
    assert get("arbiter_reward_component_agreement", {**pair, "measure": "spearman"}) == pytest.approx(1.0)
    assert get("arbiter_reward_component_agreement", {**pair, "measure": "pairwise"}) == 1.0
    assert get("arbiter_reward_canary_accuracy", spec) == 0.75
    assert get("arbiter_reward_canary_baseline", spec) == 1.0
    assert get("arbiter_reward_canary_alert", spec) == 1.0

    # Undefined statistics read as NaN; a component pair that left the window leaves the registry.
    t.window = SlidingWindow(64)
    t.observe(np.ones(2), np.ones(2), {"rm": np.ones(2)})
    t.export(metrics)
    assert math.isnan(get("arbiter_reward_length_correlation", spec))
    assert get("arbiter_reward_component_agreement", {**pair, "measure": "spearman"}) is None


# --- the dashboard -------------------------------------------------------------------------------------------


def _strings(node, keys=("expr", "query", "definition")):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in keys and isinstance(v, str):
                yield v
            else:
                yield from _strings(v, keys)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, keys)


def _defined_series() -> set[str]:
    """Every series name the code can expose: the reward gauges and the service's own metrics."""
    from arbiter.service.metrics import Metrics

    registry = CollectorRegistry()
    register_metrics(registry)
    suffixes = {"gauge": [""], "counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    names = set()
    for r in (registry, Metrics().registry):
        for family in r.collect():
            names.update(family.name + s for s in suffixes[family.type])
    return names


def test_dashboard_uses_only_metrics_the_code_defines():
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["spec"]["definition"] == "label_values(arbiter_reward_mean, spec)"

    expressions = list(_strings(dashboard))
    used = {name for e in expressions for name in re.findall(r"\barbiter_[a-z0-9_]+", e)}
    defined = _defined_series()
    assert used <= defined, f"the dashboard uses series the code does not define: {sorted(used - defined)}"
    reward_gauges = {n for n in defined if n.startswith("arbiter_reward_")}
    assert reward_gauges <= used, f"reward gauges with no panel: {sorted(reward_gauges - used)}"
    assert {"arbiter_requests_total", "arbiter_request_seconds_bucket"} <= used

    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            if "arbiter_reward_" in target["expr"]:
                assert '$spec"' in target["expr"], f"panel {panel['title']!r} ignores the spec variable"
            else:
                assert 'route="/v1/reward"' in target["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
