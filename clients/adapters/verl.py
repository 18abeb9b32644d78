"""veRL custom reward functions backed by Arbiter.

In a veRL (0.9) config:

    reward:
      custom_reward_function:
        path: <this file>          # python -m arbiter.clients.adapters verl
        name: compute_score        # or compute_score_batch with the batch reward manager
        reward_kwargs:
          url: http://127.0.0.1:8000
          model: null
          spec: null               # a reward spec name: rewards from /v1/reward (the prompt is the group)

veRL's naive reward manager calls `compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` once
per response; its batch manager calls `compute_score_batch(data_sources=, solution_strs=, ground_truths=,
extra_infos=)` once per batch (one request, chunked by the client). veRL passes the decoded response but not the
prompt: the prompt is taken from `extra_info["prompt"]` (or `"question"`), which veRL's data preprocessing
scripts can fill; without one the response is scored alone.

With a spec, `ground_truth` is each item's label and `data_source` routes it, as veRL's default_compute_score
routes by data source. A spec with verifier components answers a dict per item, which veRL's managers take
apart: `score` (the reward; the spec's fallback where a verifier failed), `arbiter_masked` (1.0 where the item
should be left out of the loss) and `arbiter_failure` (which component failed and how, or "").
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from arbiter.clients.adapters.groups import prompt_groups
from arbiter.clients.client import RewardClient
from arbiter.clients.protocol import PlainPrompt, RewardResponse

_clients: dict[tuple[str, str | None], RewardClient] = {}
_lock = threading.Lock()


def _client(url: str, model: str | None) -> RewardClient:
    with _lock:
        if (url, model) not in _clients:
            _clients[(url, model)] = RewardClient(url, model=model, on_failure="nan")
        return _clients[(url, model)]


def prompt_of(extra_info: Mapping[str, Any] | None) -> PlainPrompt:
    info = extra_info or {}
    prompt = info.get("prompt", info.get("question", ""))
    return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str = "http://127.0.0.1:8000",
    model: str | None = None,
    spec: str | None = None,
    **_: Any,
) -> float | dict[str, Any]:
    if spec is not None:
        answer = _client(url, model).reward(
            [prompt_of(extra_info)], [solution_str], spec=spec, labels=[ground_truth], data_sources=[data_source]
        )
        return _per_item(answer)[0]
    return _client(url, model).score([prompt_of(extra_info)], [solution_str]).scores[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None],
    *,
    url: str = "http://127.0.0.1:8000",
    model: str | None = None,
    spec: str | None = None,
    **_: Any,
) -> list[Any]:
    prompts = [prompt_of(info) for info in extra_infos]
    if spec is not None:
        groups = prompt_groups(prompts)
        answer = _client(url, model).reward(
            prompts,
            list(solution_strs),
            spec=spec,
            groups=groups,
            labels=list(ground_truths),
            data_sources=list(data_sources),
        )
        return _per_item(answer)
    return _client(url, model).score(prompts, list(solution_strs)).scores


def _per_item(answer: RewardResponse) -> list[Any]:
    """Plain rewards, or (with verifier components) veRL's dict form with the mask and the failure beside them."""
    if answer.mask is None:
        return list(answer.rewards)
    failures = answer.failure_kind or [None] * len(answer.rewards)
    return [
        {"score": reward, "arbiter_masked": float(masked), "arbiter_failure": failure or ""}
        for reward, masked, failure in zip(answer.rewards, answer.mask, failures, strict=True)
    ]
