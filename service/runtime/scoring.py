"""Scoring with reward models (or the judge standing in for one): score, compare, rank and OpenRLHF's get_reward,
on protocol models: the logic both faces call."""

from __future__ import annotations

import numpy as np

from arbiter.bundle.render import Prompt
from arbiter.clients.adapters.openrlhf import split_queries
from arbiter.clients.protocol import (
    ComparePair,
    CompareRequest,
    CompareResponse,
    Comparison,
    JudgeResponse,
    ModelList,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
    plain_prompt,
)
from arbiter.errors import InvalidInput, TooLarge
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.judging import JudgeService, require_judge
from arbiter.service.runtime.models import ModelRegistry, ScoredItems, ServedModel
from arbiter.service.settings import ServerSettings


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _judge_version(verdicts: JudgeResponse) -> str:
    return f"{verdicts.model}@{verdicts.constitution}-{verdicts.constitution_version}"


class ScoringService:
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
            model, [plain_prompt(i.prompt) for i in request.items], [i.response for i in request.items]
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
        prompts = [plain_prompt(i.prompt) for i in request.items]
        verdicts, scores = await require_judge(self.judging).scores(
            request.model or "", prompts, [i.response for i in request.items]
        )
        return ScoreResponse(
            model=request.model or "",
            model_version=_judge_version(verdicts),
            scores=scores,
            tokens=[v.prompt_tokens + v.completion_tokens for v in verdicts.verdicts],
            truncated=[False] * len(scores),
        )

    async def compare(self, request: CompareRequest) -> CompareResponse:
        pairs = request.all_pairs()
        if JudgeService.is_judge_model(request.model):
            return await self._judge_compare(request.model or "", pairs)
        model = self.registry.get(request.model)
        prompts = [plain_prompt(p.prompt) for p in pairs for _ in range(2)]
        responses = [r for p in pairs for r in (p.response_a, p.response_b)]
        scores = (await self._score(model, prompts, responses)).scores
        a, b = scores[0::2], scores[1::2]
        comparisons = [
            Comparison(score_a=float(x), score_b=float(y), prob_a=float(p))
            for x, y, p in zip(a, b, _sigmoid(a - b), strict=True)
        ]
        return CompareResponse(model=model.name, model_version=model.version, comparisons=comparisons)

    async def _judge_compare(self, model: str, pairs: list[ComparePair]) -> CompareResponse:
        """The judge compares pairwise (both orders); its P(a) becomes scores +-logit(P)/2, so that
        prob_a = sigmoid(score_a - score_b) holds here as it does for reward models."""
        judging = require_judge(self.judging)
        verdicts = await judging.compare(model, [(plain_prompt(p.prompt), p.response_a, p.response_b) for p in pairs])
        comparisons = []
        for verdict in verdicts.verdicts:
            p = min(max(verdict.score, 1e-6), 1 - 1e-6)
            half = float(np.log(p / (1 - p))) / 2
            comparisons.append(Comparison(score_a=half, score_b=-half, prob_a=verdict.score))
        return CompareResponse(model=model, model_version=_judge_version(verdicts), comparisons=comparisons)

    async def rank(self, request: RankRequest) -> RankResponse:
        prompt = plain_prompt(request.prompt)
        if JudgeService.is_judge_model(request.model):
            verdicts, judged = await require_judge(self.judging).scores(
                request.model or "", [prompt] * len(request.responses), request.responses
            )
            name, version, scores = request.model or "", _judge_version(verdicts), np.asarray(judged)
        else:
            model = self.registry.get(request.model)
            name, version = model.name, model.version
            scores = (await self._score(model, [prompt] * len(request.responses), request.responses)).scores
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: equal scores keep input order
        return RankResponse(model=name, model_version=version, scores=scores.tolist(), order=order)

    def models(self) -> ModelList:
        default = self.registry.default_name
        return ModelList(models=[m.info(name == default) for name, m in list(self.registry.models.items())])

    def model(self, name: str) -> ModelList:
        return ModelList(models=[self.registry.get(name).info(name == self.registry.default_name)])

    async def openrlhf(self, request: OpenRLHFRewardRequest, model_name: str | None = None) -> OpenRLHFRewardResponse:
        """OpenRLHF's texts split into prompt and response as its own reward_func form splits them."""
        try:
            split_prompts, responses = split_queries(request.query, request.prompts)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        model = self.registry.get(model_name)
        scores = (await self._score(model, list(split_prompts), responses)).scores
        return OpenRLHFRewardResponse(
            rewards=scores.tolist(),
            scores=scores.tolist(),
            extra_logs={"normalized_reward": model.normalize(scores).tolist()},
        )
