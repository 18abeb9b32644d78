"""Reward specs as the server runs them: /v1/reward and gRPC Reward fetch each spec's leaf scores (reward models
through their batching queues, judge principles through the judge, rules computed in place), compose them, and feed
the spec's telemetry. Specs are checked against what is served when the server starts and on every reload (SIGHUP or
POST /v1/admin/reload); a reload that fails keeps the specs in force, and one that succeeds swaps them at once, so
requests in flight finish on the spec they started with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from pydantic import ValidationError

from arbiter.bundle.render import Prompt
from arbiter.bundle.steps import DEFAULT_STEP_AGGREGATE, reduced_logit
from arbiter.clients.adapters.groups import group_id
from arbiter.clients.adapters.openrlhf import split_queries
from arbiter.clients.protocol import (
    JudgeItem,
    JudgeRequest,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RewardItem,
    RewardRequest,
    RewardResponse,
    RewardSpecInfo,
    RewardSpecList,
    SampleRewardRequest,
    SampleRewardResponse,
    plain_prompt,
)
from arbiter.errors import InvalidInput, NotFound, NotReady, validation_details
from arbiter.rewards.compose import ItemContext, RewardResult, compose
from arbiter.rewards.parts import read
from arbiter.rewards.running import RunningStats
from arbiter.rewards.spec import (
    BUILTIN,
    GroupJudgeComponent,
    JudgeComponent,
    LeafComponent,
    ModelComponent,
    RewardSpec,
    RuleComponent,
    SpecError,
    SpecLibrary,
    VerifierComponent,
    leaves,
)
from arbiter.rewards.telemetry import CanaryMonitor, SpecTelemetry, register_metrics
from arbiter.service.access.control import Principal
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.admission import Limits
from arbiter.service.runtime.group_judging import GroupJudgement
from arbiter.service.runtime.judging import JudgeService
from arbiter.service.runtime.models import ModelRegistry
from arbiter.service.runtime.verifying import Checked, VerificationService

# The leaves that read (a part of) the response text: models and judges.
READERS = (ModelComponent, JudgeComponent, GroupJudgeComponent)
log = logging.getLogger("arbiter.rewards")


@dataclass(frozen=True)
class SpecPolicy:
    """Where reward specs come from and how they are watched (settings of the same names)."""

    reward_specs: list[str]
    default_reward_spec: str
    reward_state_path: str | None
    reward_window: int
    reward_canary_interval_s: float


class RewardPipelines:
    def __init__(
        self,
        policy: SpecPolicy,
        registry: ModelRegistry,
        judging: JudgeService | None,
        verification: VerificationService,
        metrics: Metrics,
        limits: Limits,
    ) -> None:
        self.policy, self.registry, self.judging, self.limits = policy, registry, judging, limits
        self.verification = verification
        path = Path(policy.reward_state_path) if policy.reward_state_path else None
        self.running = RunningStats(path)
        self.gauges = register_metrics(metrics.registry)
        self.library: SpecLibrary | None = None
        self.telemetry: dict[str, SpecTelemetry] = {}
        self._canaries: list[asyncio.Task[None]] = []

    # -- loading and reloading -----------------------------------------------------------------------------------

    def _normalization(self) -> dict[str, tuple[float, float] | None]:
        stats: dict[str, tuple[float, float] | None] = {}
        for name, model in self.registry.models.items():
            norm = model.manifest.normalization
            stats[name] = (norm.mean, norm.std) if norm is not None and norm.std > 0 else None
        return stats

    def _build(self) -> SpecLibrary:
        """A library whose every spec fits what this server serves; SpecError lists every problem."""
        library = SpecLibrary([Path(p) for p in self.policy.reward_specs])
        # Resolved once here, not per request: a model component without a name is the server's default model.
        library.specs = {name: self._resolved(spec) for name, spec in library.specs.items()}
        library.get(self.policy.default_reward_spec)  # a default named but missing is the operator's mistake
        served, normalization = set(self.registry.models), self._normalization()
        problems = []
        for name in library.names:
            try:
                library.check(
                    library.get(name),
                    served,
                    self.judging is not None,
                    normalization,
                    sandbox_missing=self.verification.sandbox_missing,
                    process_models={name for name, model in self.registry.models.items() if model.steps},
                )
            except SpecError as exc:
                if library.sources[name].parent == BUILTIN:
                    # A built-in spec this server cannot run (the judge off, a bundle without statistics) is left
                    # out, not fatal: only the operator's own specs can keep the server from being ready.
                    log.warning("built-in reward spec left out", extra={"spec": name, "reason": str(exc)})
                    del library.specs[name], library.sources[name]
                    continue
                problems.append(str(exc))
        if problems:
            raise SpecError("; ".join(problems))
        return library

    def _resolved(self, spec: RewardSpec) -> RewardSpec:
        default = self.registry.default_name
        if all(c.kind != "model" or c.model for c in spec.components):
            return spec
        components = [
            c.model_copy(update={"model": c.model or default}) if c.kind == "model" else c for c in spec.components
        ]
        return spec.model_copy(update={"components": components})

    def load(self) -> None:
        """At start, after the models: a bad spec keeps the server not ready, with the reasons."""
        try:
            self.library = self._build()
        except (SpecError, NotFound) as exc:
            message = str(exc)
            self.registry.health.fail("reward_specs", message)
            log.error("reward specs not loaded; the server stays not ready", extra={"reason": message})
            return
        self.registry.health.ok("reward_specs")
        self._refresh_telemetry()

    def reload(self) -> RewardSpecList:
        try:
            library = self._build()
        except (SpecError, NotFound) as exc:
            message = str(exc)
            log.error("reload refused; the specs in force stay", extra={"reason": message})
            raise InvalidInput(f"reload refused, the specs in force stay: {message}") from exc
        self.library = library  # one assignment: a request in flight keeps the spec object it already holds
        self.registry.health.ok("reward_specs")
        self._refresh_telemetry()
        log.info("reward specs reloaded", extra={"specs": library.names})
        return self.specs()

    def _refresh_telemetry(self) -> None:
        assert self.library is not None
        for name in self.library.names:
            if name not in self.telemetry:
                self.telemetry[name] = SpecTelemetry(name, self.policy.reward_window)

    # -- serving ---------------------------------------------------------------------------------------------

    def _library(self) -> SpecLibrary:
        if self.library is None:
            raise NotReady("reward specs are not loaded (see the log)")
        return self.library

    def specs(self) -> RewardSpecList:
        library = self._library()
        default = self.policy.default_reward_spec
        return RewardSpecList(
            specs=[
                RewardSpecInfo(
                    name=s.name,
                    version=s.version,
                    description=s.description,
                    components=[c.name for c in s.components],
                    default=s.name == default,
                )
                for s in (library.get(n) for n in library.names)
            ]
        )

    def spec(self, name: str | None) -> RewardSpec:
        return self._library().get(name or self.policy.default_reward_spec)

    async def reward(self, request: RewardRequest, caller: Principal) -> RewardResponse:
        self.limits.items(len(request.items))
        spec = self.spec(request.spec)
        if any(isinstance(c, JudgeComponent | GroupJudgeComponent) for c in leaves(spec)):
            caller.require("judge", f"the reward spec {spec.name!r} (it has a judge component)")
        items = [
            ItemContext(
                prompt=plain_prompt(i.prompt),
                response=i.response,
                group=i.group,
                unsafe=i.unsafe,
                label=i.label,
                data_source=i.data_source,
            )
            for i in request.items
        ]
        result, checked = await self._evaluate(spec, items, update=request.update_stats)
        if request.update_stats:
            lengths = np.array([len(i.response.split()) for i in items], dtype=np.float64)
            self.telemetry[spec.name].observe(result.rewards, lengths, result.components)
        return RewardResponse(
            spec=spec.name,
            spec_version=spec.version,
            rewards=result.rewards.tolist(),
            components={k: v.tolist() for k, v in result.components.items()},
            extras={k: v.tolist() for k, v in result.extras.items()},
            **_verification_fields(checked, len(items)),
        )

    async def openrlhf(self, request: OpenRLHFRewardRequest, spec: str, caller: Principal) -> OpenRLHFRewardResponse:
        """/get_reward?spec=NAME: OpenRLHF's texts and labels through a reward spec (each prompt is its group).
        The components and, with verifier components, `arbiter_masked` (1.0: leave the item out) go to extra_logs,
        which OpenRLHF logs; the reward of a masked item is the spec's fallback."""
        self.limits.items(len(request.query))
        try:
            prompts, responses = split_queries(request.query, request.prompts)
            labels = request.labels if request.labels is not None else [None] * len(responses)
            if len(labels) != len(responses):
                raise ValueError(f"{len(labels)} labels for {len(responses)} queries")
            rewarded = RewardRequest.model_validate(
                {
                    "spec": spec,
                    "items": [
                        {"prompt": p, "response": r, "label": label, "group": group_id(p)}
                        for p, r, label in zip(prompts, responses, labels, strict=True)
                    ],
                }
            )
        except ValidationError as exc:
            raise InvalidInput(
                "the request does not fit a reward spec's items", validation_details(exc.errors())
            ) from exc
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        answer = await self.reward(rewarded, caller)
        logs = dict(answer.components)
        if answer.mask is not None:
            logs["arbiter_masked"] = [float(m) for m in answer.mask]
        return OpenRLHFRewardResponse(rewards=answer.rewards, scores=answer.rewards, extra_logs=logs)

    async def sample(self, request: SampleRewardRequest, spec: str | None, caller: Principal) -> SampleRewardResponse:
        """/v1/reward/sample: one sample through a reward spec, as slime's remote_rm sends it (its prompt is its
        group, so a spec's group_norm sees a group of one)."""
        group = group_id(plain_prompt(request.prompt))
        item = RewardItem(prompt=request.prompt, response=request.response, label=request.label, group=group)
        answer = await self.reward(RewardRequest(spec=spec, items=[item]), caller)
        return SampleRewardResponse(
            reward=answer.rewards[0],
            spec=answer.spec,
            spec_version=answer.spec_version,
            components={name: values[0] for name, values in answer.components.items()},
            mask=bool(answer.mask and answer.mask[0]),
            failure_kind=answer.failure_kind[0] if answer.failure_kind else None,
        )

    async def _evaluate(
        self, spec: RewardSpec, items: list[ItemContext], update: bool = True
    ) -> tuple[RewardResult, dict[str, Checked]]:
        """Encode for every model, build every judge request, count every verification; admit them all, and only
        then queue any. Each verifier component's verdicts come back beside the result."""
        sources = [c for c in leaves(spec) if not isinstance(c, RuleComponent)]  # compose computes rules
        prompts = [i.prompt for i in items]
        reads = {  # each part of the responses that a model or a judge reads
            part: [read(i.response, part) for i in items]
            for part in {
                c.part for c in sources if isinstance(c, ModelComponent | JudgeComponent | GroupJudgeComponent)
            }
        }
        # A model is encoded once per part its components read (and, for a PRM, per step separator).
        reading = {(c.model, c.part, c.step_separator) for c in sources if isinstance(c, ModelComponent)}
        models = {name: self.registry.get(name) for name, _, _ in reading}
        encoded = dict(
            zip(
                reading,
                await asyncio.gather(
                    *(models[name].encode(prompts, reads[part], separator) for name, part, separator in reading)
                ),
                strict=True,
            )
        )
        self.limits.tokens(encoded.values())
        judged = {
            c.name: self._judge_request(c, prompts, reads[c.part]) for c in sources if isinstance(c, JudgeComponent)
        }
        grouped = {
            c.name: GroupJudgement.plan(c, items, reads[c.part]) for c in sources if isinstance(c, GroupJudgeComponent)
        }
        for judge_request in [*judged.values(), *(g.request for g in grouped.values())]:
            assert self.judging is not None  # checked when the spec was loaded
            self.judging.admit(judge_request)
        verifiers = [c for c in sources if isinstance(c, VerifierComponent)]
        reservation = self.verification.admit(verifiers, items)  # last: nothing below can refuse the request
        checked: dict[str, Checked] = {}
        group_extras: dict[str, np.ndarray] = {}
        step_runs: dict[tuple[str | None, str, str | None], asyncio.Future[list[np.ndarray]]] = {}

        async def fetch(component: LeafComponent) -> np.ndarray:
            if isinstance(component, ModelComponent):
                assert component.model is not None  # the server names the default model before it serves a spec
                model, key = models[component.model], (component.model, component.part, component.step_separator)
                if model.steps is None:
                    return await model.run(encoded[key])
                if key not in step_runs:  # one forward pass per solution, however many aggregates read it
                    step_runs[key] = asyncio.ensure_future(model.step_logits(encoded[key]))
                how = component.step_aggregate or DEFAULT_STEP_AGGREGATE
                return np.array([reduced_logit(row, how) for row in await step_runs[key]])
            if isinstance(component, VerifierComponent):
                checked[component.name] = await self.verification.check(component, items, reservation)
                return checked[component.name].values
            assert self.judging is not None
            if isinstance(component, GroupJudgeComponent):
                plan = grouped[component.name]
                values, inconsistent = plan.rewards((await self.judging.judge(plan.request)).verdicts)
                group_extras[f"{component.name}.inconsistent"] = inconsistent
                return values
            verdicts = (await self.judging.judge(judged[component.name])).verdicts
            return np.array([v.score for v in verdicts], dtype=np.float64)

        tasks = [asyncio.ensure_future(fetch(c)) for c in sources]
        try:
            fetched = await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # after a failure: a check that has not begun never will, nor take its room
                task.cancel()
            self.verification.release(reservation)  # the room of checks that never began
        raw = dict(zip((c.name for c in sources), fetched, strict=True))
        normalization = {k: v for k, v in self._normalization().items() if v is not None}
        try:
            result = compose(spec, raw, items, normalization=normalization, running=self.running, update=update)
        except ValueError as exc:  # e.g. group_norm on items without a group id: the caller's to fix
            raise InvalidInput(str(exc)) from exc
        result.extras.update(group_extras)
        return result, checked

    @staticmethod
    def _judge_request(component: JudgeComponent, prompts: Sequence[Prompt], responses: list[str]) -> JudgeRequest:
        return JudgeRequest(
            mode="absolute",
            constitution=component.constitution,
            principles=component.principles,
            rationale=False,
            items=[JudgeItem(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)],
        )

    def stats(self, name: str) -> dict[str, object]:
        spec = self.spec(name)
        return {"spec": spec.name, "version": spec.version, **self.telemetry[spec.name].snapshot()}

    def refresh_gauges(self) -> None:
        for telemetry in self.telemetry.values():
            telemetry.export(self.gauges)

    # -- canaries --------------------------------------------------------------------------------------------

    def start_canaries(self, pairs: list[tuple[object, str, str]]) -> None:
        """Scores the canary pairs through every spec on a schedule, without touching running statistics. Specs
        with verifier components are left out (canary pairs carry no labels to verify against), and so are those with
        group_judge components (nor groups to compare within)."""
        for name, telemetry in self.telemetry.items():
            if any(c.kind in ("verifier", "group_judge") for c in self.spec(name).components):
                continue
            telemetry.canary = CanaryMonitor(pairs)

            async def score(prompts: list[object], responses: list[str], spec_name: str = name) -> np.ndarray:
                items = [
                    ItemContext(
                        prompt=cast(str | list[dict], p), response=r
                    )  # canary prompts are read as rendered prompts
                    for p, r in zip(prompts, responses, strict=True)
                ]
                spec, size = self.spec(spec_name), self.limits.max_items  # as requests that fit the limits
                parts = [
                    (await self._evaluate(spec, items[i : i + size], update=False))[0].rewards
                    for i in range(0, len(items), size)
                ]
                return np.concatenate(parts)

            self._canaries.append(
                asyncio.create_task(telemetry.canary.run_every(self.policy.reward_canary_interval_s, score))
            )

    def close(self) -> None:
        for task in self._canaries:
            task.cancel()


def _verification_fields(checked: dict[str, Checked], count: int) -> dict[str, object]:
    """The response's mask, failure kinds and verdicts; absent for a spec without verifier components."""
    if not checked:
        return {}
    masked = [any(c.masked[i] for c in checked.values()) for i in range(count)]
    failures = [next((f for c in checked.values() if (f := c.failures[i])), None) for i in range(count)]
    return {
        "mask": masked,
        "failure_kind": failures,
        "verifications": {name: c.verifications for name, c in checked.items()},
    }


def read_canaries(path: Path) -> list[tuple[object, str, str]]:
    """(prompt, chosen, rejected) from any preference file the training loader reads."""
    from arbiter.data.load import load_source
    from arbiter.data.sources import SourceSpec

    groups, _ = load_source(SourceSpec(path=str(path)))
    return [(g.prompt, g.responses[0], g.responses[1]) for g in groups if len(g.responses) == 2]
