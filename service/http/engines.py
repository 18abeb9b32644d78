"""The engines' routes (vLLM's /classify and /pooling, TEI's /predict, SGLang's /v1/embeddings): thin, over
EngineService, with Arbiter's limits and error bodies (the status codes the engines' clients act on)."""

from fastapi import APIRouter

from arbiter.clients.engines import (
    ClassifyRequest,
    ClassifyResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    PoolingRequest,
    PoolingResponse,
    Prediction,
    PredictRequest,
)
from arbiter.service.runtime.engines import EngineService


def engine_routes(engines: EngineService) -> APIRouter:
    router = APIRouter(tags=["engine protocols"])

    @router.post("/classify", response_model=ClassifyResponse)
    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        """vLLM's classification API: what veRL's reward loop posts (`{model, input, use_activation: false}`,
        reading `data[-1].probs[-1]`)."""
        return await engines.classify(request)

    @router.post("/pooling", response_model=PoolingResponse)
    async def pooling(request: PoolingRequest) -> PoolingResponse:
        """vLLM's pooling API, for a classification (reward) head: each input's outputs."""
        return await engines.pooling(request)

    @router.post("/predict", response_model=list[Prediction] | list[list[Prediction]])
    async def predict(request: PredictRequest) -> list[Prediction] | list[list[Prediction]]:
        """TEI's sequence-classification API, on the default model."""
        return await engines.predict(request)

    @router.post("/v1/embeddings", response_model=EmbeddingsResponse)
    async def embeddings(request: EmbeddingsRequest) -> EmbeddingsResponse:
        """What SGLang answers for a reward model (veRL's reward loop reads `data[-1].embedding[-1]`)."""
        return await engines.embeddings(request)

    return router
