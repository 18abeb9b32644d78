"""The engines' scoring protocols (vLLM's /classify and /pooling, TEI's /predict, SGLang's /v1/embeddings for reward
models) answered by the same models, batching queue, limits and errors as Arbiter's own routes.

Activation follows the engines: sigmoid for a model with one output, softmax over several; off, the raw logits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import numpy as np

from arbiter.bundle.render import Encoded
from arbiter.bundle.steps import probabilities
from arbiter.clients.engines import (
    ClassifyData,
    ClassifyRequest,
    ClassifyResponse,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EngineInput,
    PoolingData,
    PoolingRequest,
    PoolingResponse,
    Prediction,
    PredictRequest,
    Usage,
    as_inputs,
)
from arbiter.errors import InvalidInput, ModelNotFound, TooLarge
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.admission import Limits
from arbiter.service.runtime.models import ModelRegistry, ServedModel

# transformers' name for the one label of a single-output head (its default id2label).
SINGLE_LABEL = "LABEL_0"


def _activate(rows: np.ndarray) -> np.ndarray:
    if rows.shape[1] == 1:
        return 1 / (1 + np.exp(-rows))
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class EngineService:
    def __init__(self, limits: Limits, registry: ModelRegistry, metrics: Metrics) -> None:
        self.limits, self.registry, self.metrics = limits, registry, metrics

    def _model(self, name: str | None) -> ServedModel:
        """A served name, or the checkpoint a model was made from: engines' clients name models by their hub id or
        path (veRL sends its reward_model.model_path), which an imported bundle records."""
        try:
            return self.registry.get(name)
        except ModelNotFound:
            found = []
            for model in self.registry.models.values():
                source = model.manifest.source
                if name in (model.manifest.model.base_model, source.checkpoint if source else None):
                    found.append(model)
            if len(found) > 1:  # two bundles of one checkpoint (another --objective, say): the caller must choose
                names = sorted(m.name for m in found)
                raise InvalidInput(
                    f"{name!r} is served as {', '.join(names)}: name one", details={"models": names}
                ) from None
            if found:
                return found[0]
            raise

    async def _outputs(
        self, model: ServedModel, inputs: Sequence[str | list[int]], keep_end: bool, limit: int | None, strict: bool
    ) -> tuple[np.ndarray, list[Encoded]]:
        """[inputs, outputs]: each input's head outputs (every objective, or the one score)."""
        encoded = self._admitted(model, inputs, keep_end, limit, strict)
        scores, objectives = await model.run_objectives(encoded)
        histogram = self.metrics.scores.labels(model.name)
        for score in scores:
            histogram.observe(score)
        rows = objectives if objectives is not None else scores[:, None]
        return rows, encoded

    def _admitted(
        self, model: ServedModel, inputs: Sequence[str | list[int]], keep_end: bool, limit: int | None, strict: bool
    ) -> list[Encoded]:
        """The inputs encoded as the engines do (texts as they are, or token ids), within every limit."""
        self.limits.items(len(inputs))
        if limit == -1:
            limit = None
        builder = model.runner.builder
        encoded = [
            builder.encode_text(item, keep_end, limit)
            if isinstance(item, str)
            else builder.encode_ids(item, keep_end, limit)
            for item in inputs
        ]
        if empty := [i for i, e in enumerate(encoded) if not e.ids]:
            raise InvalidInput(f"input {empty[0]} has no tokens: nothing to score", details={"inputs": empty})
        if strict and (over := [i for i, e in enumerate(encoded) if e.truncated]):
            raise TooLarge(
                f"input {over[0]} is longer than the model's {builder.max_length} tokens (and truncate is false)",
                details={"limit": "max_length", "max": builder.max_length, "inputs": over},
            )
        self.limits.tokens([encoded])
        return encoded

    def _labels(self, model: ServedModel) -> list[str]:
        return model.objectives or [SINGLE_LABEL]

    @staticmethod
    def _usage(encoded: list[Encoded]) -> Usage:
        tokens = sum(len(e.ids) for e in encoded)
        return Usage(prompt_tokens=tokens, total_tokens=tokens)

    async def _engine(
        self, name: str | None, value: EngineInput, activation: bool | None, limit: int | None
    ) -> tuple[ServedModel, np.ndarray, list[Encoded]]:
        model = self._model(name)
        rows, encoded = await self._outputs(model, as_inputs(value), True, limit, strict=False)
        return model, _activate(rows) if activation is not False else rows, encoded

    async def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        model, rows, encoded = await self._engine(
            request.model, request.input, request.use_activation, request.truncate_prompt_tokens
        )
        labels = self._labels(model)
        data = [
            ClassifyData(index=i, label=labels[int(np.argmax(row))], probs=row.tolist(), num_classes=len(row))
            for i, row in enumerate(rows)
        ]
        return ClassifyResponse(
            id=f"classify-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=request.model or model.name,
            data=data,
            usage=self._usage(encoded),
        )

    async def pooling(self, request: PoolingRequest) -> PoolingResponse:
        if request.task == "token_classify" or self._model(request.model).steps is not None:
            return await self._step_pooling(request)
        # A classification head's pooled outputs; activation, as vLLM's classify pooler, on unless turned off.
        model, rows, encoded = await self._engine(
            request.model, request.input, request.use_activation, request.truncate_prompt_tokens
        )
        return PoolingResponse(
            id=f"pool-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=request.model or model.name,
            data=[PoolingData(index=i, data=row.tolist()) for i, row in enumerate(rows)],
            usage=self._usage(encoded),
        )

    async def _step_pooling(self, request: PoolingRequest) -> PoolingResponse:
        """vLLM's step pooling of a process reward model (Qwen2.5-Math-PRM's layout): each input's text marks its
        steps with the model's step token, and each step gets two classes, [wrong, right]: probabilities, or with
        activation off logits whose softmax they are ([0, the step's logit])."""
        model = self._model(request.model)
        if model.steps is None:
            raise InvalidInput(f"{model.name} is not a process reward model: token_classify reads a score at each step")
        if request.task not in (None, "token_classify"):
            raise InvalidInput(f"{model.name} is a process reward model: its pooling task is token_classify")
        limit = None if request.truncate_prompt_tokens == -1 else request.truncate_prompt_tokens
        encoded = self._admitted(model, as_inputs(request.input), True, limit, strict=False)
        logits = await model.step_logits(encoded)
        raw = request.use_activation is False
        data = [
            PoolingData(
                index=i, data=[[0.0, z] if raw else [1 - p, p] for z, p in zip(row, probabilities(row), strict=True)]
            )
            for i, row in enumerate(logits)
        ]
        return PoolingResponse(
            id=f"pool-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=request.model or model.name,
            data=data,
            usage=self._usage(encoded),
        )

    async def embeddings(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        # SGLang answers a reward model's /v1/embeddings with its raw head outputs (veRL reads embedding[-1]).
        model, rows, encoded = await self._engine(request.model, request.input, False, None)
        return EmbeddingsResponse(
            data=[Embedding(index=i, embedding=row.tolist()) for i, row in enumerate(rows)],
            model=request.model or model.name,
            usage=self._usage(encoded),
        )

    async def predict(self, request: PredictRequest) -> list[Prediction] | list[list[Prediction]]:
        try:
            texts, batch = request.texts()
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        model = self._model(None)
        keep_end = request.truncation_direction is None or request.truncation_direction.lower() == "left"
        rows, _ = await self._outputs(model, texts, keep_end, None, strict=request.truncate is False)
        rows = rows if request.raw_scores else _activate(rows)
        labels = self._labels(model)
        answers = [
            sorted(
                (Prediction(score=float(s), label=label) for s, label in zip(row, labels, strict=True)),
                key=lambda p: -p.score,
            )
            for row in rows
        ]
        return answers if batch else answers[0]
