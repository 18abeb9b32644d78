"""The KL-shaped reward helpers, against numbers worked out by hand."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from arbiter.clients.shaping import (
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
    kl_shaped_rewards,
    last_token_index,
    whiten,
)

LOGP = [[-1.0, -2.0, -0.5], [-0.2, -3.0, 0.0]]
REF = [[-1.5, -1.0, -0.5], [-0.2, -2.0, 0.0]]
MASK = [[1, 1, 1], [1, 1, 0]]  # the second response is two tokens long


def test_k1_and_k3_by_hand():
    # k1 = logp - ref: row 0 -> [0.5, -1.0, 0.0]; k3 = exp(ref - logp) - 1 - (ref - logp)
    assert np.allclose(kl_estimate(LOGP, REF, "k1"), [[0.5, -1.0, 0.0], [0.0, -1.0, 0.0]])
    k3 = kl_estimate(LOGP, REF, "k3")
    assert math.isclose(k3[0][0], math.exp(-0.5) - 1 + 0.5) and math.isclose(k3[0][1], math.exp(1.0) - 1 - 1.0)
    assert (np.asarray(k3) >= 0).all()
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_estimate(LOGP, REF, "k2")  # type: ignore[arg-type]  # an unknown estimator, on purpose


def test_shaped_rewards_put_the_score_on_the_last_real_token():
    rewards, kl = kl_shaped_rewards([2.0, -1.0], LOGP, REF, MASK, beta=0.1)
    # row 0: -0.1 * [0.5, -1.0, 0.0] + [0, 0, 2.0]; row 1: -0.1 * [0.0, -1.0] + [0, -1.0], padding stays 0
    assert np.allclose(rewards, [[-0.05, 0.1, 2.0], [0.0, 0.1 - 1.0, 0.0]])
    assert np.allclose(kl, [[0.5, -1.0, 0.0], [0.0, -1.0, 0.0]])
    assert list(last_token_index([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]])) == [1, 3, 1]
    with pytest.raises(ValueError, match="3 scores for 2 responses"):
        kl_shaped_rewards([1.0, 2.0, 3.0], LOGP, REF, MASK, beta=0.1)


def test_whitening_keeps_the_mean_when_asked_and_ignores_padding():
    values = [[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]]
    mask = [[1, 1, 1], [1, 1, 0]]
    # the real entries are 1..5: mean 3, population variance 2
    out = np.asarray(whiten(values, mask))
    assert np.allclose(out[0], (np.array([1, 2, 3]) - 3) / math.sqrt(2 + 1e-8)) and out[1, 2] == 0
    kept = np.asarray(whiten(values, mask, shift_mean=False))
    assert math.isclose(kept[0, 0], (1 - 3) / math.sqrt(2 + 1e-8) + 3)
    rewards, _ = kl_shaped_rewards([2.0, -1.0], LOGP, REF, MASK, beta=0.1, whiten_rewards=True)
    real = np.asarray(rewards)[np.asarray(MASK) == 1]
    assert math.isclose(real.std(), 1.0, rel_tol=1e-6)


def test_torch_in_torch_out():
    logp, ref = torch.tensor(LOGP, dtype=torch.float32), torch.tensor(REF, dtype=torch.float32)
    rewards, kl = kl_shaped_rewards(torch.tensor([2.0, -1.0]), logp, ref, torch.tensor(MASK), beta=0.1, estimator="k3")
    assert isinstance(rewards, torch.Tensor) and rewards.dtype == torch.float32 and kl.shape == (2, 3)
    expected, _ = kl_shaped_rewards([2.0, -1.0], LOGP, REF, MASK, beta=0.1, estimator="k3")
    assert np.allclose(rewards.numpy(), expected, atol=1e-6)


def test_kl_controllers():
    assert FixedKLController(0.05).update(current_kl=100.0, n_steps=64) == 0.05
    adaptive = AdaptiveKLController(beta=0.1, target=6.0, horizon=10_000)
    # KL 12 vs target 6: error clipped to +0.2; beta *= 1 + 0.2 * 1000 / 10000
    assert math.isclose(adaptive.update(current_kl=12.0, n_steps=1000), 0.1 * 1.02)
    # KL 3 vs target 6: error -0.5 clipped to -0.2
    assert math.isclose(adaptive.update(current_kl=3.0, n_steps=1000), 0.1 * 1.02 * 0.98)


def test_shaping_needs_no_torch():
    code = (
        "import sys; from arbiter.clients.shaping import kl_shaped_rewards as f;"
        "f([1.0], [[0.0]], [[0.0]], [[1]], 0.1); print('torch' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
