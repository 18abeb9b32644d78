"""Verifier components as the server runs them: every routed item checked in the verifier pool (worker processes
with a wall-clock limit each), failures turned into the spec's fallback, mask or refusal, and metrics."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arbiter.clients.protocol import Verification
from arbiter.errors import InvalidInput
from arbiter.rewards.compose import ItemContext
from arbiter.rewards.spec import VerifierComponent
from arbiter.service.metrics import Metrics
from arbiter.verifiers.pool import VerifierPool
from arbiter.verifiers.registry import VERIFIERS, warm


@dataclass(frozen=True)
class VerifierPolicy:
    """The verifier pool's size (settings of the same names)."""

    verifier_workers: int
    verifier_max_queue: int


@dataclass
class Checked:
    """One verifier component over a request's items."""

    values: np.ndarray  # the component's raw value per item: the verdict's score, `otherwise`, or `fallback`
    verifications: list[Verification]
    masked: list[bool]
    failures: list[str | None]  # "<component>: <status>" where a verifier failed


class VerificationService:
    def __init__(self, policy: VerifierPolicy, metrics: Metrics) -> None:
        workers = policy.verifier_workers or os.cpu_count() or 1
        self.pool = VerifierPool("verifier", workers, policy.verifier_max_queue, warm=warm)
        self.metrics = metrics

    def admit(self, components: Sequence[VerifierComponent], items: Sequence[ItemContext]) -> None:
        """Refuses the request before anything runs: a label missing where a verifier needs one (400), or more
        items than the pool has room for (429)."""
        routed = 0
        for c in components:
            chosen = [i for i, item in enumerate(items) if c.routed(item.data_source)]
            if VERIFIERS[c.verifier].needs_label:
                missing = [i for i in chosen if items[i].label is None]
                if missing:
                    raise InvalidInput(
                        f"component {c.name!r} (the {c.verifier} verifier) needs each item's label; items "
                        f"{missing[:10]} have none",
                        details={"component": c.name, "items": missing[:100]},
                    )
            routed += len(chosen)
        self.pool.reserve(routed)

    async def check(self, component: VerifierComponent, items: Sequence[ItemContext]) -> Checked:
        """Runs the routed items admitted by `admit`; a failure never fails the other items."""
        verifier = VERIFIERS[component.verifier]
        rules = component.rules

        async def one(item: ItemContext) -> Verification:
            if not component.routed(item.data_source):
                return Verification(status="skipped", score=component.otherwise)
            started = time.perf_counter()
            verdict = await self.pool.run(
                verifier.check, item.response, item.label, rules, timeout=rules.timeout_s, reserved=True
            )
            self.metrics.verification_seconds.labels(component.verifier).observe(time.perf_counter() - started)
            self.metrics.verifications.labels(component.verifier, verdict.status).inc()
            return Verification(
                status=verdict.status, score=verdict.score, extracted=verdict.extracted, detail=verdict.detail
            )

        verifications = list(await asyncio.gather(*(one(item) for item in items)))
        values, masked, failures, refused = [], [], [], []
        for i, v in enumerate(verifications):
            failed = v.status in ("no_answer", "timeout", "error")
            action = (component.on_no_answer if v.status == "no_answer" else component.on_error) if failed else None
            values.append(component.fallback if failed else v.score)
            masked.append(action == "mask")
            failures.append(f"{component.name}: {v.status}" if failed else None)
            if action == "fail":
                refused.append(i)
        if refused:
            raise InvalidInput(
                f"component {component.name!r}: the {component.verifier} verifier failed on items {refused[:10]} "
                "and the spec fails such requests (on_no_answer / on_error: fail)",
                details={
                    "component": component.name,
                    "items": [{"item": i, **verifications[i].model_dump(exclude_none=True)} for i in refused[:100]],
                },
            )
        return Checked(np.array(values, dtype=np.float64), verifications, masked, failures)

    def close(self) -> None:
        self.pool.close()
