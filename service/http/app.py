"""The FastAPI app: routes are thin; the work is in arbiter.service.runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import arbiter
from arbiter.clients.protocol import (
    CompareRequest,
    CompareResponse,
    ErrorBody,
    ModelInfo,
    ModelList,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
)
from arbiter.service.http import errors
from arbiter.service.http.middleware import BodyLimit, RequestContext
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.models import ModelRegistry
from arbiter.service.runtime.rewards import RewardService
from arbiter.service.settings import ServerSettings

log = logging.getLogger("arbiter.http")
ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 413, 422, 429, 503)}


class Runtime:
    """Everything one server process shares between its faces."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = ModelRegistry(settings, self.metrics.observe_batch)
        self.rewards = RewardService(settings, self.registry, self.metrics)

    async def start(self) -> None:
        # Loading runs in a thread so /healthz answers (and /readyz says 503) while bundles load.
        await asyncio.to_thread(self.registry.load_all)
        for name, seconds in self.registry.load_seconds.items():
            self.metrics.load_seconds.labels(name).set(seconds)
        log.info("ready" if self.registry.ready else "not ready", extra={"failures": self.registry.failures})

    def refresh_gauges(self) -> None:
        for name, model in self.registry.models.items():
            self.metrics.queue_depth.labels(name).set(model.batcher.depth)


def create_app(settings: ServerSettings, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(runtime.start())
        yield
        loading.cancel()
        runtime.registry.close()

    app = FastAPI(title="Arbiter", version=arbiter.__version__, lifespan=lifespan, responses=ERRORS)
    app.state.runtime = runtime
    errors.install(app)
    rewards = runtime.rewards

    @app.post("/v1/score", response_model=ScoreResponse, response_model_exclude_none=True)
    async def score(request: ScoreRequest) -> ScoreResponse:
        return await rewards.score(request)

    @app.post("/v1/compare", response_model=CompareResponse)
    async def compare(request: CompareRequest) -> CompareResponse:
        return await rewards.compare(request)

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(request: RankRequest) -> RankResponse:
        return await rewards.rank(request)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return rewards.models()

    @app.get("/v1/models/{name}", response_model=ModelInfo)
    async def model(name: str) -> ModelInfo:
        return rewards.model(name).models[0]

    @app.post("/get_reward", response_model=OpenRLHFRewardResponse)
    async def get_reward(request: OpenRLHFRewardRequest) -> OpenRLHFRewardResponse:
        return await rewards.openrlhf(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        registry = runtime.registry
        if registry.ready:
            return JSONResponse({"status": "ready", "models": sorted(registry.models)})
        reason = "loading" if not registry.loaded else "failed"
        body = {"error": {"code": "not_ready", "message": f"models {reason}", "details": registry.failures}}
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        runtime.refresh_gauges()
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=runtime.metrics)
    return app
