"""OpenRLHF's remote-reward conventions, shared by the server's /get_reward and the reward_func file.

OpenRLHF sends whole decoded texts (`queries`: prompt + response) and, beside them, the prompts. The response
is what follows the prompt in its query; a query that does not start with its prompt is scored whole.
"""

from __future__ import annotations

from collections.abc import Sequence


def split_queries(queries: Sequence[str], prompts: Sequence[str] | None) -> tuple[list[str], list[str]]:
    if prompts is not None and len(prompts) != len(queries):
        raise ValueError(f"{len(prompts)} prompts for {len(queries)} queries")
    split_prompts: list[str] = []
    responses: list[str] = []
    for i, query in enumerate(queries):
        prompt = prompts[i] if prompts is not None else ""
        if prompt and query.startswith(prompt):
            split_prompts.append(prompt)
            responses.append(query[len(prompt) :])
        else:
            split_prompts.append(prompt or "")
            responses.append(query)
    return split_prompts, responses
