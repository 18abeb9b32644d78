"""Retries with exponential backoff and full jitter, waiting at least what the server's Retry-After asks."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Retry:
    """`attempts` tries in all; before try n+1 wait uniform(0, min(max_backoff, backoff * 2**n)) seconds, and
    never less than the server's Retry-After. Jitter keeps many trainer workers from retrying in lockstep."""

    attempts: int = 6
    backoff: float = 0.25
    max_backoff: float = 8.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        jittered = (rng or random).uniform(0, ceiling)
        return max(jittered, retry_after or 0.0)
