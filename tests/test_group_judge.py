"""Rewards over a group (GRPO's responses to one prompt) from the judge's pairwise comparisons: which pairs, the
Bradley-Terry fit and the win rate on known answers, a group_judge component on the known-answer judge (its
position bias shows as inconsistency), and one served by a real server with the real local judge, over HTTP and gRPC,
equal to the rewards computed from that judge's own /v1/judge verdicts for the same pairs."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from arbiter.errors import InvalidInput
from arbiter.rewards.compose import ItemContext
from arbiter.rewards.group_compare import bradley_terry, comparison_pairs, group_rewards, win_rate
from arbiter.rewards.spec import GroupJudgeComponent, SpecError, check_spec, parse_spec
from arbiter.service.runtime.group_judging import GroupJudgement
from tests.server import running_server
from tests.test_judging import BAD, GOOD, KnownAnswerBackend, judge

QUESTION = "What is the capital of France?"
SPEC = """name: versus
version: "1"
components:
  - {name: bt, kind: group_judge, principles: [helpful]}
  - {name: wins, kind: group_judge, principles: [helpful], reward: win_rate, pairs: circular}
reward:
  - {component: bt, weight: 1.0}
"""


def test_all_pairs_or_a_circle():
    assert comparison_pairs(4, "all_pairs") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert comparison_pairs(4, "circular") == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert comparison_pairs(2, "circular") == [(0, 1)] and comparison_pairs(1, "all_pairs") == []


def test_bradley_terry_recovers_strengths_and_win_rate_counts_wins():
    truth = np.array([1.5, 0.5, -0.5, -1.5])
    pairs = comparison_pairs(4, "all_pairs")
    p = [1 / (1 + math.exp(-(truth[a] - truth[b]))) for a, b in pairs]
    fitted = bradley_terry(4, pairs, p)
    assert np.allclose(fitted, truth, atol=0.05) and abs(fitted.mean()) < 1e-9  # the prior shrinks a little
    circle = comparison_pairs(4, "circular")
    assert np.argsort(-bradley_terry(4, circle, [1 / (1 + math.exp(-(truth[a] - truth[b]))) for a, b in circle])
                      ).tolist() == [0, 1, 2, 3]  # fmt: skip
    # a response that wins every comparison outright keeps a finite strength
    assert np.isfinite(bradley_terry(3, comparison_pairs(3, "all_pairs"), [1.0, 1.0, 0.5])).all()
    assert win_rate(3, [(0, 1), (0, 2), (1, 2)], [0.9, 0.8, 0.5]).tolist() == pytest.approx([0.85, 0.3, 0.35])
    assert group_rewards(1, [], [], "win_rate").tolist() == [0.5] and group_rewards(1, [], [], "bradley_terry") == 0


def _plan(reward: str, pairs: str = "all_pairs") -> GroupJudgement:
    component = GroupJudgeComponent(name="g", kind="group_judge", principles=["helpful"], reward=reward, pairs=pairs)
    responses = [BAD, GOOD, BAD + " Really.", GOOD, BAD]
    items = [ItemContext(prompt=QUESTION, response=r, group=g) for r, g in zip(responses, "aaabb", strict=True)]
    return GroupJudgement.plan(component, items, responses)


def test_group_judge_on_the_known_answer_judge():
    plan = _plan("win_rate")
    assert plan.pairs == [(0, 1), (0, 2), (1, 2), (3, 4)]  # within each group only
    verdicts = asyncio.run(judge(KnownAnswerBackend(skill=0.9)).judge(plan.request)).verdicts
    wins, inconsistent = plan.rewards(verdicts)
    # GOOD wins its comparisons at 0.9; two BADs judged against each other come out even (this judge prefers the
    # second of two BADs: 0.1 one way, 0.9 swapped), and that preference for a position is an inconsistency
    assert wins.tolist() == pytest.approx([(0.1 + 0.5) / 2, 0.9, (0.5 + 0.1) / 2, 0.9, 0.1])
    assert inconsistent.tolist() == [0.5, 0.0, 0.5, 0.0, 0.0]
    strengths, _ = _plan("bradley_terry").rewards(verdicts)
    assert strengths[1] > strengths[0] == pytest.approx(strengths[2]) and strengths[3] > strengths[4]
    assert strengths[:3].sum() == pytest.approx(0, abs=1e-9) and strengths[3:].sum() == pytest.approx(0, abs=1e-9)
    # A judge pulled toward "A" so far that both orders pick the first response: every comparison inconsistent
    biased = asyncio.run(judge(KnownAnswerBackend(skill=0.6, position_bias=0.35)).judge(plan.request)).verdicts
    assert plan.rewards(biased)[1].tolist() == [1.0] * 5


def test_items_without_a_group_and_specs_without_a_judge_are_refused():
    component = GroupJudgeComponent(name="g", kind="group_judge")
    with pytest.raises(InvalidInput, match="has no group id"):
        GroupJudgement.plan(component, [ItemContext(prompt="q", response="a")], ["a"])
    spec = parse_spec({"name": "s", "version": "1", "components": [{"name": "g", "kind": "group_judge"}],
                       "reward": [{"component": "g", "weight": 1.0}]}, "s.yaml")  # fmt: skip
    with pytest.raises(SpecError, match="no judge"):
        check_spec(spec, set(), judge_available=False, normalization={})


@pytest.fixture(scope="module")
def judged_server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("group-judge")
    (logs / "versus.yaml").write_text(SPEC)
    flags = ("--bundles", f"rm={bundle_dir}", "--reward-specs", str(logs / "versus.yaml"),
             "--reward-state-path", str(logs / "state.sqlite"))  # fmt: skip
    with running_server(logs, *flags) as server:  # the real local judge: SmolLM2-135M-Instruct in process
        yield server


def test_group_judge_served_with_the_real_local_judge_over_http_and_grpc(judged_server):
    responses = ["Paris is the capital of France.", "I do not know.", "It is Lyon, I think.", "Paris.", "Berlin."]
    groups = ["q1", "q1", "q1", "q2", "q2"]
    items = [{"prompt": QUESTION, "response": r, "group": g} for r, g in zip(responses, groups, strict=True)]
    answer = httpx.post(judged_server.url + "/v1/reward", json={"spec": "versus", "items": items}, timeout=300)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # the same pairs through /v1/judge: both orders, the helpful principle
    pairs = {"bt": [(0, 1), (0, 2), (1, 2), (3, 4)], "wins": [(0, 1), (1, 2), (2, 0), (3, 4)]}
    for name, how in (("bt", "bradley_terry"), ("wins", "win_rate")):
        judged = httpx.post(judged_server.url + "/v1/judge", timeout=300, json={
            "mode": "pairwise", "principles": ["helpful"], "rationale": False,
            "items": [{"prompt": QUESTION, "response_a": responses[a], "response_b": responses[b]}
                      for a, b in pairs[name]]}).json()["verdicts"]  # fmt: skip
        p = [v["score"] for v in judged]
        expected = np.concatenate([group_rewards(3, [(0, 1), (0, 2), (1, 2)] if how == "bradley_terry" else
                                                 [(0, 1), (1, 2), (2, 0)], p[:3], how),
                                   group_rewards(2, [(0, 1)], p[3:], how)])  # fmt: skip
        assert np.allclose(body["components"][name], expected, atol=1e-6), name
        inconsistent = body["extras"][f"{name}.inconsistent"]
        assert len(inconsistent) == 5 and all(0 <= x <= 1 for x in inconsistent)
        assert inconsistent[3] == inconsistent[4] == float(bool(judged[3]["inconsistent"]))
    assert np.allclose(body["rewards"], body["components"]["bt"])
    with grpc.insecure_channel(judged_server.grpc_target) as channel:
        grpc_items = [pb.RewardItem(prompt=pb.Prompt(text=QUESTION), response=r, group=g)
                      for r, g in zip(responses, groups, strict=True)]  # fmt: skip
        request = pb.RewardRequest(spec="versus", items=grpc_items)
        over_grpc = reward_pb2_grpc.RewardServiceStub(channel).Reward(request, timeout=300)
    assert np.allclose(over_grpc.rewards, body["rewards"], atol=1e-9)
    assert np.allclose(over_grpc.extras["bt.inconsistent"].values, body["extras"]["bt.inconsistent"])
    ungrouped = httpx.post(judged_server.url + "/v1/reward", json={"spec": "versus", "items": [
        {"prompt": QUESTION, "response": "Paris."}]}, timeout=60)  # fmt: skip
    assert ungrouped.status_code == 400 and "has no group id" in ungrouped.json()["error"]["message"]
