"""The judge as the server offers it: /v1/judge and gRPC Judge, the constitution list, and judge-backed
scores for /v1/score (model `judge` or `judge:CONSTITUTION`). Backend failures become 502/504, never a crash:
the reward-model routes do not depend on the judge."""

from __future__ import annotations

import time
from pathlib import Path

from arbiter.clients.protocol import (
    ConstitutionInfo,
    ConstitutionList,
    JudgeItem,
    JudgeRequest,
    JudgeResponse,
    PrincipleInfo,
    Prompt,
)
from arbiter.errors import JudgeBackendDown, JudgeOff, JudgeTimeout, NotFound, NotReady, TooLarge
from arbiter.judge.backends import open_backend
from arbiter.judge.backends.base import BackendError, JudgeBackend
from arbiter.judge.cache import VerdictCache
from arbiter.judge.constitution import ConstitutionLibrary
from arbiter.judge.judging import Judge, JudgeParseError
from arbiter.service.metrics import Metrics
from arbiter.service.settings import ServerSettings

JUDGE_MODEL = "judge"


def require_judge(judging: JudgeService | None) -> JudgeService:
    """The judge service, or 503 when a bad constitution kept it from being set up."""
    if judging is None:
        raise NotReady("the judge is not set up (see the constitution errors in the log)")
    return judging


class JudgeService:
    def __init__(self, settings: ServerSettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.library = ConstitutionLibrary([Path(p) for p in settings.constitutions])  # ConstitutionError: bad file
        self.library.get(settings.default_constitution)
        self.backend: JudgeBackend | None = None
        if settings.judge_backend != "off":
            self.backend = open_backend(
                settings.judge_backend,
                settings.judge_model,
                settings.judge_base_url,
                settings.judge_api_key_env,
                settings.judge_timeout_s,
                settings.judge_concurrency,
            )
        path = Path(settings.judge_cache_path) if settings.judge_cache_path else None
        self.cache = VerdictCache(settings.judge_cache_size, path) if settings.judge_cache_size else None
        self.judge_ = (
            Judge(self.backend, self.library, self.cache, settings.default_constitution) if self.backend else None
        )

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
        if len(request.items) > self.settings.max_items:
            raise TooLarge(f"{len(request.items)} items in one request (limit {self.settings.max_items})")
        try:
            constitution = self.library.get(request.constitution or self.settings.default_constitution)
            for name in request.principles or []:
                constitution.principle(name)
        except KeyError as exc:
            raise NotFound(exc.args[0]) from exc
        started = time.perf_counter()
        try:
            response = await self.judge_.judge(request)
        except BackendError as exc:
            self.metrics.judge_errors.labels("timeout" if exc.timeout else "backend").inc()
            if exc.timeout:
                raise JudgeTimeout(f"the judge backend did not answer in time: {exc}") from exc
            raise JudgeBackendDown(f"the judge backend failed: {exc}") from exc
        except JudgeParseError as exc:
            self.metrics.judge_errors.labels("unparsable").inc()
            raise JudgeBackendDown(str(exc)) from exc
        self.metrics.judge_latency.labels(request.mode).observe(time.perf_counter() - started)
        for verdict in response.verdicts:
            for part in verdict.principles:
                self.metrics.judge_verdicts.labels(request.mode, str(part.cached).lower()).inc()
                if part.inconsistent is not None:
                    self.metrics.judge_position_inconsistent.labels(str(part.inconsistent).lower()).inc()
        return response

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
