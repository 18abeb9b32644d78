"""The KL-shaped reward of InstructGPT (Ouyang et al. 2022; Ziegler et al. 2019) for any PPO loop.

Per response token t:  r_t = -beta * KL_t,  and the reward model's score is added at the last response token.
KL_t estimates KL(policy || reference) from the sampled token's log-probabilities under both models:
  k1 = log p(t) - log p_ref(t)                  unbiased, can be negative per token
  k3 = exp(-k1) - 1 + k1                        unbiased, never negative, lower variance (Schulman, 2020)

Arrays are numpy arrays or torch tensors, shaped (batch, response_tokens) with a 0/1 mask of real tokens
(right padding or any gaps). What goes in comes back: a tensor in, a tensor on the same device out. Rewards
carry no gradient, so the arithmetic runs in float64 numpy; torch is only touched when given a tensor.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

Estimator = Literal["k1", "k3"]


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _like(result: np.ndarray, template: Any) -> Any:
    if hasattr(template, "detach"):
        import torch

        return torch.from_numpy(result).to(device=template.device, dtype=template.dtype)
    return result


def kl_estimate(logprobs: Any, ref_logprobs: Any, estimator: Estimator = "k1") -> Any:
    """Per-token KL(policy || reference) estimates from the sampled tokens' log-probabilities."""
    k1 = _numpy(logprobs) - _numpy(ref_logprobs)
    if estimator == "k1":
        return _like(k1, logprobs)
    if estimator == "k3":
        return _like(np.expm1(-k1) + k1, logprobs)
    raise ValueError(f"unknown KL estimator {estimator!r}: use 'k1' or 'k3'")


def whiten(values: Any, mask: Any | None = None, shift_mean: bool = True, eps: float = 1e-8) -> Any:
    """(values - mean) / std over the masked entries (population std); shift_mean=False keeps the mean.
    Entries outside the mask come back as 0, so padding never carries an advantage or a reward."""
    v = _numpy(values)
    m = np.ones_like(v) if mask is None else _numpy(mask)
    count = m.sum()
    if count == 0:
        raise ValueError("nothing to whiten: the mask is all zeros")
    mean = (v * m).sum() / count
    variance = (((v - mean) ** 2) * m).sum() / count
    out = (v - mean) / math.sqrt(variance + eps)
    if not shift_mean:
        out += mean
    return _like(out * m, values)


def last_token_index(mask: Any) -> np.ndarray:
    """Index of the last real token in each row (rows must have at least one)."""
    m = _numpy(mask) > 0
    if not m.any(axis=1).all():
        raise ValueError("every response needs at least one real token in the mask")
    return m.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)


def kl_shaped_rewards(
    scores: Any,
    logprobs: Any,
    ref_logprobs: Any,
    mask: Any,
    beta: float,
    estimator: Estimator = "k1",
    whiten_rewards: bool = False,
) -> tuple[Any, Any]:
    """Per-token rewards and the per-token KL: r = -beta * KL on real tokens, plus `scores[i]` at row i's last
    real token. With whiten_rewards the rewards are scaled to unit variance over real tokens, their mean kept
    (TRL's `whiten_rewards`)."""
    m = _numpy(mask)
    kl = _numpy(kl_estimate(logprobs, ref_logprobs, estimator)) * m
    rewards = -beta * kl
    s = _numpy(scores).reshape(-1)
    if s.shape[0] != rewards.shape[0]:
        raise ValueError(f"{s.shape[0]} scores for {rewards.shape[0]} responses")
    rewards[np.arange(len(s)), last_token_index(m)] += s
    if whiten_rewards:
        rewards = _numpy(whiten(rewards, m, shift_mean=False))
    return _like(rewards, logprobs), _like(kl, logprobs)


class FixedKLController:
    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.beta


class AdaptiveKLController:
    """Ziegler et al. 2019: beta follows the measured KL toward `target`, by at most 20% per `horizon` samples."""

    def __init__(self, beta: float, target: float, horizon: int = 10_000) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("the KL target and the horizon must be positive")
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.beta *= 1 + error * n_steps / self.horizon
        return self.beta
