"""The FastAPI app: routes are thin; the work is in arbiter.service.runtime."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import arbiter
from arbiter.clients.protocol import (
    CompareRequest,
    CompareResponse,
    ConstitutionList,
    ErrorBody,
    JudgeRequest,
    JudgeResponse,
    LoadModelRequest,
    ModelInfo,
    ModelList,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RankRequest,
    RankResponse,
    RewardRequest,
    RewardResponse,
    RewardSpecList,
    SampleRewardRequest,
    SampleRewardResponse,
    ScoreRequest,
    ScoreResponse,
)
from arbiter.errors import NotReady, ShuttingDown
from arbiter.service.access.control import Principal
from arbiter.service.http import errors
from arbiter.service.http.access import AccessCheck
from arbiter.service.http.annotation import annotation_routes
from arbiter.service.http.engines import engine_routes
from arbiter.service.http.middleware import BodyLimit, RequestContext
from arbiter.service.http.pages import install_pages
from arbiter.service.runtime.judging import require_judge
from arbiter.service.runtime.runtime import Runtime
from arbiter.service.settings import ServerSettings


async def _principal(request: Request) -> Principal:
    """The caller the access check admitted (service/http/access.py). Async, so that FastAPI does not hand this
    lookup to a worker thread on every request."""
    return request.state.principal


Caller = Annotated[Principal, Depends(_principal)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)
}


def create_app(settings: ServerSettings, runtime: Runtime) -> FastAPI:
    """The HTTP face of `runtime`; whoever made the runtime starts and closes it (see serve.py)."""

    app = FastAPI(title="Arbiter", version=arbiter.__version__, responses=ERRORS)
    app.state.runtime = runtime
    errors.install(app)
    scoring = runtime.scoring

    @app.post("/v1/score", response_model=ScoreResponse, response_model_exclude_none=True)
    async def score(request: ScoreRequest, caller: Caller) -> ScoreResponse:
        return await scoring.score(request, caller)

    @app.post("/v1/compare", response_model=CompareResponse)
    async def compare(request: CompareRequest, caller: Caller) -> CompareResponse:
        return await scoring.compare(request, caller)

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(request: RankRequest, caller: Caller) -> RankResponse:
        return await scoring.rank(request, caller)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return scoring.models()

    @app.get("/v1/models/{name}", response_model=ModelInfo)
    async def model(name: str) -> ModelInfo:
        return scoring.model(name).models[0]

    @app.post("/v1/judge", response_model=JudgeResponse)
    async def judge(request: JudgeRequest) -> JudgeResponse:
        return await require_judge(runtime.judging).judge(request)

    @app.get("/v1/constitutions", response_model=ConstitutionList)
    async def constitutions() -> ConstitutionList:
        return require_judge(runtime.judging).constitutions()

    @app.post("/v1/reward", response_model=RewardResponse)
    async def reward(request: RewardRequest, caller: Caller) -> RewardResponse:
        return await runtime.pipelines.reward(request, caller)

    @app.get("/v1/reward-specs", response_model=RewardSpecList)
    async def reward_specs() -> RewardSpecList:
        return runtime.pipelines.specs()

    @app.get("/v1/reward-specs/{name}/stats")
    async def reward_spec_stats(name: str) -> dict[str, object]:
        return runtime.pipelines.stats(name)

    @app.post("/v1/admin/reload", response_model=RewardSpecList)
    async def reload() -> RewardSpecList:
        """Reloads the API keys and the reward specs (as SIGHUP does); what fails keeps what is in force (400)."""
        return runtime.reload()

    @app.post("/v1/admin/models", response_model=ModelList)
    async def load_model(request: LoadModelRequest) -> ModelList:
        """Serves a bundle without a restart (a retrained model under a served name replaces it)."""
        return await runtime.load_model(request)

    @app.post("/get_reward", response_model=OpenRLHFRewardResponse)
    async def get_reward(
        request: OpenRLHFRewardRequest, caller: Caller, spec: Annotated[str | None, Query(max_length=200)] = None
    ) -> OpenRLHFRewardResponse:
        """OpenRLHF's remote reward model (`--remote_rm_url http://host:8000/get_reward`): the default model's
        scores, or with `?spec=NAME` a reward spec's rewards, with OpenRLHF's `labels` as the items' labels."""
        if spec is not None:
            return await runtime.pipelines.openrlhf(request, spec, caller)
        return await scoring.openrlhf(request)

    @app.post("/v1/reward/sample", response_model=SampleRewardResponse)
    async def reward_sample(
        request: SampleRewardRequest, caller: Caller, spec: Annotated[str | None, Query(max_length=200)] = None
    ) -> SampleRewardResponse:
        """One sample as slime's remote_rm posts it (`--rm-type remote_rm --rm-url
        http://host:8000/v1/reward/sample?spec=NAME --reward-key reward`): the spec's reward (the default spec
        without `spec`), its components, and whether the sample is masked."""
        return await runtime.pipelines.sample(request, spec, caller)

    app.include_router(engine_routes(runtime.engines))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def health() -> Response:
        """The engines' liveness probe (vLLM, TEI and SGLang answer /health with an empty 200)."""
        return Response(status_code=200, media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """503 while draining or while a component (models, constitutions, api_keys, reward_specs) is not ready,
        naming each with why; 200 lists every component's state, the store's too (which never holds it back)."""
        if runtime.shutting_down:
            return errors.arbiter_error_response(ShuttingDown("draining before shutdown"))
        health = runtime.health
        if not health.ready:
            return errors.arbiter_error_response(NotReady(health.summary(), health.holding_back()))
        models = sorted(runtime.registry.models)
        return JSONResponse({"status": "ready", "models": models, "components": health.report()})

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics() -> Response:
        runtime.refresh_gauges()
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(annotation_routes(runtime.annotation))
    install_pages(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessCheck, access=runtime.access, allowed_hosts=[settings.host, *settings.allowed_hosts])
    app.add_middleware(RequestContext, metrics=runtime.metrics)
    if settings.cors_origins:  # outermost, so refusals carry the CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id", "retry-after"],
        )
    return app
