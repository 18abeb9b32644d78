"""The judge as the server offers it: /v1/judge and gRPC Judge, the constitution list, and judge-backed
scores for /v1/score (model `judge` or `judge:CONSTITUTION`). Backend failures become 502/504, never a crash:
the reward-model routes do not depend on the judge."""

from __future__ import annotations

import logging
import time

from arbiter.clients.protocol import (
    ConstitutionInfo,
    ConstitutionList,
    JudgeItem,
    JudgeRequest,
    JudgeResponse,
    PrincipleInfo,
    Prompt,
)
from arbiter.errors import JudgeBackendDown, JudgeOff, JudgeTimeout, NotReady
from arbiter.judge.backends.base import BackendError, JudgeBackend
from arbiter.judge.judging import JudgeParseError
from arbiter.judge.settings import JudgeSettings
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.admission import Limits

log = logging.getLogger("arbiter.judge")
JUDGE_MODEL = "judge"


def conversation_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "".join(m.content for m in prompt)


def require_judge(judging: JudgeService | None) -> JudgeService:
    """The judge service, or 503 when a bad constitution kept it from being set up."""
    if judging is None:
        raise NotReady("the judge is not set up (see the constitution errors in the log)")
    return judging


class JudgeService:
    def __init__(self, settings: JudgeSettings, metrics: Metrics, limits: Limits) -> None:
        self.settings, self.metrics, self.limits = settings, metrics, limits
        self.library = settings.open_library()  # ConstitutionError: a bad file
        self.backend: JudgeBackend | None = settings.open_backend()
        self.judge_ = settings.open_judge(self.backend, self.library) if self.backend else None
        self.cache = self.judge_.cache if self.judge_ else settings.open_cache()

    def constitutions(self) -> ConstitutionList:
        default = self.settings.default_constitution
        return ConstitutionList(
            constitutions=[
                ConstitutionInfo(
                    name=c.name,
                    version=c.version,
                    description=c.description,
                    principles=[PrincipleInfo(**p.model_dump()) for p in c.principles],
                    default=c.name == default,
                )
                for c in self.library.constitutions.values()
            ]
        )

    async def judge(self, request: JudgeRequest) -> JudgeResponse:
        if self.judge_ is None:
            raise JudgeOff("the judge is off on this server (judge_backend=off)")
        self.admit(request)
        started = time.perf_counter()
        try:
            response = await self.judge_.judge(request)
        except BackendError as exc:
            self.metrics.judge_errors.labels("timeout" if exc.timeout else "backend").inc()
            # The backend's words (its URL, which may hold credentials; its answer) are for the log only.
            log.error("judge backend failed", extra={"reason": str(exc), "timeout": exc.timeout})
            if exc.timeout:
                raise JudgeTimeout("the judge backend did not answer in time; the server's log says more") from exc
            raise JudgeBackendDown("the judge backend failed; the server's log says why") from exc
        except JudgeParseError as exc:
            self.metrics.judge_errors.labels("unparsable").inc()
            log.error("judge answer unusable", extra={"reason": str(exc)})
            raise JudgeBackendDown("the judge model gave no usable verdict; the server's log says why") from exc
        self.metrics.judge_latency.labels(request.mode).observe(time.perf_counter() - started)
        for verdict in response.verdicts:
            for part in verdict.principles:
                self.metrics.judge_verdicts.labels(request.mode, str(part.cached).lower()).inc()
                if part.inconsistent is not None:
                    self.metrics.judge_position_inconsistent.labels(str(part.inconsistent).lower()).inc()
        return response

    def admit(self, request: JudgeRequest) -> None:
        """What the judge would refuse, refused before anything is queued: too many items, too long an item, an
        unknown constitution or principle."""
        self.limits.items(len(request.items))
        self.limits.judge_chars(
            [conversation_text(i.prompt), *(r for r in (i.response, i.response_a, i.response_b) if r is not None)]
            for i in request.items
        )
        constitution = self.library.get(request.constitution or self.settings.default_constitution)
        for name in request.principles or []:
            constitution.principle(name)

    @staticmethod
    def is_judge_model(name: str | None) -> bool:
        return name is not None and (name == JUDGE_MODEL or name.startswith(JUDGE_MODEL + ":"))

    async def scores(
        self, model: str, prompts: list[Prompt], responses: list[str]
    ) -> tuple[JudgeResponse, list[float]]:
        """Judge-backed rewards: the absolute verdict over all principles, on [0, 1], without rationales."""
        constitution = model.partition(":")[2] or None
        items = [JudgeItem(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)]
        response = await self.judge(
            JudgeRequest(mode="absolute", constitution=constitution, rationale=False, items=items)
        )
        return response, [v.score for v in response.verdicts]

    async def compare(self, model: str, pairs: list[tuple[Prompt, str, str]]) -> JudgeResponse:
        """Judge-backed comparisons: the pairwise verdict over all principles, both orders."""
        constitution = model.partition(":")[2] or None
        items = [JudgeItem(prompt=p, response_a=a, response_b=b) for p, a, b in pairs]
        return await self.judge(JudgeRequest(mode="pairwise", constitution=constitution, items=items))

    def refresh_gauges(self) -> None:
        if self.cache is not None:
            self.metrics.judge_cache.labels("hit").set(self.cache.hits)
            self.metrics.judge_cache.labels("miss").set(self.cache.misses)

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()
