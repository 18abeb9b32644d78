"""Verifier components as the server runs them: every routed item checked in the verifier pool (worker processes
with a wall-clock limit each), failures turned into the spec's fallback, mask or refusal, and metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from arbiter.clients.protocol import Verification
from arbiter.errors import InvalidInput, QueueFull
from arbiter.rewards.compose import ItemContext
from arbiter.rewards.spec import VerifierComponent
from arbiter.sandbox.base import Sandbox, SandboxUnavailable
from arbiter.sandbox.bwrap import BubblewrapSandbox
from arbiter.sandbox.fusion import SandboxFusionSandbox
from arbiter.service.metrics import Metrics
from arbiter.verifiers import code
from arbiter.verifiers.pool import VerifierPool
from arbiter.verifiers.registry import VERIFIERS, Rules, warm
from arbiter.verifiers.verdict import FAILURES, Verdict


@dataclass(frozen=True)
class VerifierPolicy:
    """The verifier pool's and the sandbox's sizes (settings of the same names)."""

    verifier_workers: int
    verifier_max_queue: int
    sandbox_backend: Literal["bwrap", "sandbox_fusion"]
    sandbox_url: str | None
    sandbox_slots: int
    sandbox_max_queue: int


@dataclass
class Reservation:
    """The room `admit` took for one request's items: each check takes its share as it starts, and `release` gives
    back what no check took (a request cancelled, or failed, before all of its checks began)."""

    pool: int
    sandbox: int


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
        self.sandbox: Sandbox | None = None
        self.sandbox_missing: str | None = None  # why code cannot run here
        try:
            if policy.sandbox_backend == "sandbox_fusion":
                self.sandbox = SandboxFusionSandbox(policy.sandbox_url, policy.sandbox_slots)
            else:
                self.sandbox = BubblewrapSandbox(policy.sandbox_slots)
        except SandboxUnavailable as exc:
            self.sandbox_missing = str(exc)
        self.sandbox_room = policy.sandbox_slots + policy.sandbox_max_queue
        self.sandboxed = 0  # code items running or waiting
        metrics.sandbox_in_flight.set_function(lambda: self.sandbox.in_flight if self.sandbox else 0)

    def admit(self, components: Sequence[VerifierComponent], items: Sequence[ItemContext]) -> Reservation:
        """Refuses the request before anything runs: a label missing where a verifier needs one (400), or more
        items than the pool has room for (429)."""
        routed = sandboxed = 0
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
            if VERIFIERS[c.verifier].sandboxed:
                sandboxed += len(chosen)
            else:
                routed += len(chosen)
        if self.sandboxed + sandboxed > self.sandbox_room:
            raise QueueFull(
                f"the sandbox has {self.sandboxed} programs running or waiting and {sandboxed} more do not fit "
                f"(limit {self.sandbox_room}); retry later",
                retry_after=1.0,
                details={"limit": "sandbox_max_queue", "value": self.sandboxed + sandboxed},
            )
        self.pool.reserve(routed)
        self.sandboxed += sandboxed
        return Reservation(routed, sandboxed)

    def release(self, reservation: Reservation) -> None:
        self.pool.release(reservation.pool)
        self.sandboxed -= reservation.sandbox
        reservation.pool = reservation.sandbox = 0

    async def check(
        self, component: VerifierComponent, items: Sequence[ItemContext], reservation: Reservation
    ) -> Checked:
        """Runs the routed items admitted by `admit`; a failure never fails the other items."""
        verifier = VERIFIERS[component.verifier]
        rules = component.rules

        routed = [i for i, item in enumerate(items) if component.routed(item.data_source)]
        answers = [(component.read(items[i].response), items[i].label) for i in routed]
        # The room is handed over with no await before the code that gives it back, so a cancellation cannot
        # leave it taken.
        if verifier.sandboxed:
            reservation.sandbox -= len(answers)
            try:
                verdicts = list(await asyncio.gather(*(self._program(r, label, rules) for r, label in answers)))
            finally:
                self.sandboxed -= len(answers)
        else:
            assert verifier.check is not None  # every verifier that is not sandboxed checks in the pool
            reservation.pool -= len(answers)
            verdicts = await self.pool.run_all(verifier.check, answers, rules, timeout=rules.timeout_s, reserved=True)
        verifications = [Verification(status="skipped", score=component.otherwise) for _ in items]
        for i, verdict in zip(routed, verdicts, strict=True):
            self.metrics.verification_seconds.labels(component.verifier).observe(verdict.seconds)
            self.metrics.verifications.labels(component.verifier, verdict.status).inc()
            verifications[i] = Verification(
                status=verdict.status, score=verdict.score, extracted=verdict.extracted, detail=verdict.detail
            )
        values, masked, failures, refused = [], [], [], []
        for i, v in enumerate(verifications):
            failed = v.status in FAILURES
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

    async def _program(self, response: str, label: object, rules: Rules) -> Verdict:
        if self.sandbox is None:
            return Verdict(0.0, "error", None, f"code cannot run on this server: {self.sandbox_missing}")
        assert isinstance(rules, code.CodeRules)
        started = time.perf_counter()
        verdict = await code.check(response, label, rules, self.sandbox)
        return dataclasses.replace(verdict, seconds=time.perf_counter() - started)

    def close(self) -> None:
        self.pool.close()
