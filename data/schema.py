"""The one in-memory shape of preference data: a prompt, K responses, and who beat whom."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from arbiter.bundle.render import Prompt


@dataclass(frozen=True)
class Comparison:
    """responses[winner] was preferred to responses[loser]."""

    winner: int
    loser: int
    margin: float | None = None  # Llama 2 style margin, in score units
    strength: float | None = None  # P(winner preferred), in (0.5, 1]


@dataclass(frozen=True)
class PreferenceGroup:
    """A pairwise comparison is a group of two responses with one comparison; a K-wise ranking has up to
    K-choose-2. Each response is encoded once per group, whatever the number of comparisons."""

    prompt: Prompt
    responses: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    source: str
    subset: str | None = None

    @property
    def prompt_key(self) -> str:
        return prompt_key(self.prompt)

    def to_row(self) -> dict[str, object]:
        """The row form `arbiter train` reads back: pairwise when it is a pair, else K-wise ranks."""
        row: dict[str, object] = {"prompt": self.prompt, "dataset": self.source}
        if self.subset is not None:
            row["subset"] = self.subset
        if len(self.responses) == 2 and len(self.comparisons) == 1:
            c = self.comparisons[0]
            row["chosen"], row["rejected"] = self.responses[c.winner], self.responses[c.loser]
            if c.margin is not None:
                row["margin"] = c.margin
            if c.strength is not None:
                row["preference_strength"] = c.strength
            return row
        wins = [sum(1 for c in self.comparisons if c.winner == i) for i in range(len(self.responses))]
        row["responses"] = list(self.responses)
        row["ranking"] = [1 + sum(1 for w in wins if w > mine) for mine in wins]
        return row


def prompt_key(prompt: Prompt) -> str:
    canonical = prompt if isinstance(prompt, str) else [[m["role"], m["content"]] for m in prompt]
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode()).hexdigest()
