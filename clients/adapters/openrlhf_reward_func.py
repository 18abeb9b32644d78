"""OpenRLHF's `reward_func` file form, scored by Arbiter: pass this file's path to OpenRLHF.

    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url "$(python -m arbiter.clients.adapters openrlhf)"

OpenRLHF loads the file and calls `reward_func(queries, prompts, labels)` from worker threads. Unlike pointing
`--reward.remote_url` at /get_reward directly, this goes through the client: gRPC or HTTP, retries with backoff,
and NaN (not a crashed rollout) for what still fails. Configured by environment variables:
  ARBITER_REWARD_URL    server URL, http(s):// or grpc(s):// (default http://127.0.0.1:8000)
  ARBITER_REWARD_MODEL  model name (default: the server's default model)
  ARBITER_REWARD_SPEC   a reward spec name: rewards from /v1/reward instead of one model's scores; OpenRLHF's
                        labels are the items' labels, and a verifier's mask comes back as extra_logs["arbiter_masked"]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from arbiter.clients.adapters.groups import prompt_groups
from arbiter.clients.adapters.openrlhf import split_queries
from arbiter.clients.client import RewardClient

_clients: dict[tuple[str, str | None], RewardClient] = {}
_lock = threading.Lock()


def _client() -> RewardClient:
    key = (os.environ.get("ARBITER_REWARD_URL", "http://127.0.0.1:8000"), os.environ.get("ARBITER_REWARD_MODEL"))
    with _lock:  # OpenRLHF calls from many threads at once; they share one client and its connections
        if key not in _clients:
            _clients[key] = RewardClient(key[0], model=key[1], on_failure="nan")
        return _clients[key]


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any]) -> dict[str, Any]:
    """The same answer as Arbiter's /get_reward: rewards (raw scores), scores, and extra_logs."""
    split_prompts, responses = split_queries(queries, prompts)
    spec = os.environ.get("ARBITER_REWARD_SPEC")
    if spec:
        rewarded = _client().reward(
            split_prompts,
            responses,
            spec=spec,
            groups=prompt_groups(split_prompts),
            labels=list(labels) if labels else None,
        )
        logs: dict[str, list[float]] = dict(rewarded.components)
        if rewarded.mask is not None:  # OpenRLHF has no mask: the fallback reward, and the mask beside it
            logs["arbiter_masked"] = [float(m) for m in rewarded.mask]
        return {"rewards": rewarded.rewards, "scores": rewarded.rewards, "extra_logs": logs}
    answer = _client().score(split_prompts, responses, normalize=True)
    return {
        "rewards": answer.scores,
        "scores": answer.scores,
        "extra_logs": {"normalized_reward": answer.normalized_scores or []},
    }
