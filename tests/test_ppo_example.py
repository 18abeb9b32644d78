"""examples/ppo_loop.py runs end to end on CPU against a real server: rewards from Arbiter over gRPC, PPO steps."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SCORE_ROUTE = "/arbiter.v1.RewardService/Score"
STEP = re.compile(
    r"^step (\d+)/(\d+)\s+reward (\S+)\s+kl (\S+)\s+beta (\S+)\s+policy_loss (\S+)\s+value_loss (\S+)\s+s/step (\S+)$",
    re.M,
)


def scores_answered(server) -> float:
    """The server's count of gRPC Score requests that succeeded, from its Prometheus metrics."""
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for labels, value in re.findall(r"^arbiter_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        if f'route="{SCORE_ROUTE}"' in labels and 'status="OK"' in labels:
            total += float(value)
    return total


def test_ppo_loop_trains_on_rewards_from_the_server(server):
    before = scores_answered(server)
    command = [
        sys.executable, "examples/ppo_loop.py", "--url", server.grpc_url, "--policy", "tiny",
        "--steps", "3", "--batch", "2", "--max-new-tokens", "8", "--seed", "0",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"

    steps = STEP.findall(done.stdout)
    assert len(steps) == 3, done.stdout
    for i, (step, total, *numbers, _seconds) in enumerate(steps, start=1):
        assert (int(step), int(total)) == (i, 3)
        reward, kl, beta, policy_loss, value_loss = map(float, numbers)
        assert all(math.isfinite(x) for x in (reward, kl, beta, policy_loss, value_loss)), steps[i - 1]
        assert beta == 0.05 and value_loss >= 0
    assert steps[0][3] in ("0.0000", "-0.0000"), "the policy starts as the reference: no KL at step 1"
    assert "done:" in done.stdout.splitlines()[-1]
    # One Score call per step (2 items is one chunk): the rewards really came from the server.
    assert scores_answered(server) - before >= 3
