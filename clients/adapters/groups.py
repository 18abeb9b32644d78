"""GRPO samples several completions per prompt: the prompt itself is the group a spec's group_norm uses. The id is
a digest of the prompt, so that long prompts fit the wire's name limit and prompts sharing a prefix stay apart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from arbiter.clients.protocol import PlainPrompt


def group_id(prompt: PlainPrompt) -> str:
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def prompt_groups(prompts: Sequence[PlainPrompt]) -> list[str]:
    return [group_id(p) for p in prompts]
