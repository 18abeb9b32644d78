"""Score, compare, rank and OpenRLHF's get_reward, on protocol models: the logic both faces call."""

from __future__ import annotations

import numpy as np

from arbiter.bundle.render import Prompt
from arbiter.clients.adapters.openrlhf import split_queries
from arbiter.clients.protocol import (
    ChatMessage,
    CompareRequest,
    CompareResponse,
    Comparison,
    ModelList,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
)
from arbiter.service.errors import InvalidInput, NotReady, TooLarge
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.judging import JudgeService
from arbiter.service.runtime.models import ModelRegistry, ScoredItems, ServedModel
from arbiter.service.settings import ServerSettings


def _prompt(value: str | list[ChatMessage]) -> Prompt:
    return value if isinstance(value, str) else [m.model_dump() for m in value]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


class RewardService:
    def __init__(
        self, settings: ServerSettings, registry: ModelRegistry, metrics: Metrics, judging: JudgeService | None = None
    ) -> None:
        self.settings, self.registry, self.metrics, self.judging = settings, registry, metrics, judging

    async def _score(self, model: ServedModel, prompts: list[Prompt], responses: list[str]) -> ScoredItems:
        if len(prompts) > self.settings.max_items:
            raise TooLarge(f"{len(prompts)} items in one request (limit {self.settings.max_items})")
        scored = await model.score(prompts, responses)
        tokens = sum(len(e.ids) for e in scored.encoded)
        if tokens > self.settings.max_request_tokens:  # checked after truncation, on what would really run
            raise TooLarge(f"{tokens} tokens in one request (limit {self.settings.max_request_tokens})")
        histogram = self.metrics.scores.labels(model.name)
        for s in scored.scores:
            histogram.observe(s)
        return scored

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        if JudgeService.is_judge_model(request.model):
            return await self._judge_scores(request)
        model = self.registry.get(request.model)
        scored = await self._score(
            model, [_prompt(i.prompt) for i in request.items], [i.response for i in request.items]
        )
        scores = _sigmoid(scored.scores) if request.sigmoid else scored.scores
        return ScoreResponse(
            model=model.name,
            model_version=model.version,
            scores=scores.tolist(),
            normalized_scores=model.normalize(scored.scores).tolist() if request.normalize else None,
            tokens=[len(e.ids) for e in scored.encoded],
            truncated=[e.truncated for e in scored.encoded],
        )

    async def _judge_scores(self, request: ScoreRequest) -> ScoreResponse:
        """A judge standing in for a reward model: the same request and answer, scores on [0, 1]."""
        if self.judging is None:
            raise NotReady("the judge is not set up (see the constitution errors in the log)")
        prompts = [_prompt(i.prompt) for i in request.items]
        verdicts, scores = await self.judging.scores(request.model or "", prompts, [i.response for i in request.items])
        return ScoreResponse(
            model=request.model or "",
            model_version=f"{verdicts.model}@{verdicts.constitution}-{verdicts.constitution_version}",
            scores=scores,
            tokens=[v.prompt_tokens + v.completion_tokens for v in verdicts.verdicts],
            truncated=[False] * len(scores),
        )

    async def compare(self, request: CompareRequest) -> CompareResponse:
        model = self.registry.get(request.model)
        pairs = request.all_pairs()
        prompts = [_prompt(p.prompt) for p in pairs for _ in range(2)]
        responses = [r for p in pairs for r in (p.response_a, p.response_b)]
        scores = (await self._score(model, prompts, responses)).scores
        a, b = scores[0::2], scores[1::2]
        comparisons = [
            Comparison(score_a=float(x), score_b=float(y), prob_a=float(p))
            for x, y, p in zip(a, b, _sigmoid(a - b), strict=True)
        ]
        return CompareResponse(model=model.name, model_version=model.version, comparisons=comparisons)

    async def rank(self, request: RankRequest) -> RankResponse:
        model = self.registry.get(request.model)
        prompt = _prompt(request.prompt)
        scores = (await self._score(model, [prompt] * len(request.responses), request.responses)).scores
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: equal scores keep input order
        return RankResponse(model=model.name, model_version=model.version, scores=scores.tolist(), order=order)

    def models(self) -> ModelList:
        default = self.registry.default_name
        return ModelList(models=[m.info(name == default) for name, m in self.registry.models.items()])

    def model(self, name: str) -> ModelList:
        return ModelList(models=[self.registry.get(name).info(name == self.registry.default_name)])

    async def openrlhf(self, request: OpenRLHFRewardRequest, model_name: str | None = None) -> OpenRLHFRewardResponse:
        """OpenRLHF's texts split into prompt and response as its own reward_func form splits them."""
        try:
            split_prompts, responses = split_queries(request.query, request.prompts)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        prompts: list[Prompt] = list(split_prompts)
        model = self.registry.get(model_name)
        scores = (await self._score(model, prompts, responses)).scores
        return OpenRLHFRewardResponse(
            rewards=scores.tolist(),
            scores=scores.tolist(),
            extra_logs={"normalized_reward": model.normalize(scores).tolist()},
        )
