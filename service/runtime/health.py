"""Readiness by component: what the server loads at start, each one loading, ready or failed (and why). /readyz and
the gRPC health service both report it; the runtime and the model registry record into it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# off: not configured (the store without annotation_db); skipped: not checked, another component having failed first.
State = Literal["loading", "ready", "failed", "off", "skipped"]
# The store is reported but holds nothing back: scoring does not need it, and its routes answer 503 while it is down.
REQUIRED = ("models", "constitutions", "api_keys", "reward_specs")
COMPONENTS = (*REQUIRED, "store")  # in the order Runtime.start loads them (constitutions and keys: before it)


@dataclass(frozen=True)
class Component:
    state: State
    reason: str | None = None

    def report(self) -> dict[str, str]:
        return {"state": self.state, **({"reason": self.reason} if self.reason else {})}


class Health:
    def __init__(self) -> None:
        self.components = {name: Component("loading") for name in COMPONENTS}

    def ok(self, name: str) -> None:
        self.components[name] = Component("ready")

    def fail(self, name: str, reason: str) -> None:
        self.components[name] = Component("failed", reason)

    def off(self, name: str, reason: str) -> None:
        self.components[name] = Component("off", reason)

    def skip(self, name: str, reason: str) -> None:
        self.components[name] = Component("skipped", reason)

    def stopped(self, reason: str) -> None:
        """Loading ended early (a bug, say), so that nothing says 'loading' forever: the component being loaded
        failed (they load in COMPONENTS order), the ones after it were skipped."""
        loading = [name for name, component in self.components.items() if component.state == "loading"]
        for name in loading[:1]:
            self.fail(name, reason)
        for name in loading[1:]:
            self.skip(name, f"not checked: loading stopped at {loading[0]}")

    @property
    def ready(self) -> bool:
        return all(self.components[name].state == "ready" for name in REQUIRED)

    def holding_back(self) -> dict[str, str]:
        """Why each required component that is done loading is not ready (failed, or skipped): the details of
        /readyz and NotReady. The ones still loading are named by the summary."""
        held = {name: self.components[name] for name in REQUIRED}
        return {name: c.reason for name, c in held.items() if c.state in ("failed", "skipped") and c.reason}

    def summary(self) -> str:
        """'api_keys failed', 'models, reward_specs failed' or 'loading': what /readyz and NotReady answers say
        first. A component is named once it is settled: probes and tests wait for a name to appear."""
        failed = [name for name in REQUIRED if self.components[name].state == "failed"]
        if failed:
            return f"{', '.join(failed)} failed"
        return "ready" if self.ready else "loading"

    def report(self) -> dict[str, dict[str, str]]:
        return {name: component.report() for name, component in self.components.items()}
