"""Scoring with reward models (or the judge standing in for one): score, compare, rank and OpenRLHF's get_reward,
on protocol models: the logic both faces call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arbiter.bundle.render import Encoded, Prompt
from arbiter.bundle.steps import STEP_AGGREGATES, aggregate, probabilities, reduced_logit
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
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    StepScores,
    plain_prompt,
)
from arbiter.errors import InvalidInput
from arbiter.service.access.control import Principal
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.admission import Limits
from arbiter.service.runtime.judging import JudgeService, require_judge
from arbiter.service.runtime.models import ModelRegistry, ServedModel


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _content(item: ScoreItem) -> str | list[str]:
    return item.steps if item.steps is not None else item.response or ""


def _step_scores(logits: np.ndarray) -> StepScores:
    p = probabilities(logits)
    return StepScores(probabilities=p.tolist(), **{how: aggregate(p, how) for how in STEP_AGGREGATES})


def _judge_version(verdicts: JudgeResponse) -> str:
    return f"{verdicts.model}@{verdicts.constitution}-{verdicts.constitution_version}"


class ScoringService:
    def __init__(
        self, limits: Limits, registry: ModelRegistry, metrics: Metrics, judging: JudgeService | None = None
    ) -> None:
        self.limits, self.registry, self.metrics, self.judging = limits, registry, metrics, judging

    async def _score(
        self, model: ServedModel, prompts: Sequence[Prompt], responses: Sequence[str]
    ) -> tuple[np.ndarray, list[Encoded]]:
        """Encode, admit, then run (admission.py); the caller has checked the item count in its own unit."""
        scores, _, encoded = await self._score_objectives(model, prompts, responses)
        return scores, encoded

    async def _score_objectives(
        self,
        model: ServedModel,
        prompts: Sequence[Prompt],
        responses: Sequence[str | Sequence[str]],
        separator: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, list[Encoded]]:
        encoded = await model.encode(prompts, responses, separator)
        self.limits.tokens([encoded])
        scores, objectives = await model.run_objectives(encoded)
        histogram = self.metrics.scores.labels(model.name)
        for s in scores:
            histogram.observe(s)
        return scores, objectives, encoded

    def _judge(self, caller: Principal, model: str) -> JudgeService:
        caller.require("judge", f"the judge model {model!r}")
        return require_judge(self.judging)

    async def score(self, request: ScoreRequest, caller: Principal) -> ScoreResponse:
        self.limits.items(len(request.items))
        if JudgeService.is_judge_model(request.model):
            return await self._judge_scores(request, caller)
        model = self.registry.get(request.model)
        if model.steps is not None:
            return await self._step_scores(model, request)
        prompts, responses = [plain_prompt(i.prompt) for i in request.items], [_content(i) for i in request.items]
        raw, objectives, encoded = await self._score_objectives(model, prompts, responses, request.step_separator)
        scores = _sigmoid(raw) if request.sigmoid else raw
        names = model.objectives or []
        return ScoreResponse(
            model=model.name,
            model_version=model.version,
            scores=scores.tolist(),
            normalized_scores=model.normalize(raw).tolist() if request.normalize else None,
            tokens=[len(e.ids) for e in encoded],
            truncated=[e.truncated for e in encoded],
            objectives=[dict(zip(names, row.tolist(), strict=True)) for row in objectives]
            if objectives is not None
            else None,
        )

    async def _step_scores(self, model: ServedModel, request: ScoreRequest) -> ScoreResponse:
        """A process reward model: every step's P(right) in one forward pass per item, and the score is the logit
        of the aggregate the request chose, so that compare-style uses (sigmoid, differences) still hold."""
        prompts = [plain_prompt(i.prompt) for i in request.items]
        encoded = await model.encode(prompts, [_content(i) for i in request.items], request.step_separator)
        self.limits.tokens([encoded])
        logits = await model.step_logits(encoded)
        steps = [_step_scores(row) for row in logits]
        raw = np.array([reduced_logit(row, request.step_aggregate) for row in logits])
        histogram = self.metrics.scores.labels(model.name)
        for s in raw:
            histogram.observe(s)
        return ScoreResponse(
            model=model.name,
            model_version=model.version,
            scores=(_sigmoid(raw) if request.sigmoid else raw).tolist(),
            normalized_scores=model.normalize(raw).tolist() if request.normalize else None,
            tokens=[len(e.ids) for e in encoded],
            truncated=[e.truncated for e in encoded],
            steps=steps,
        )

    async def _judge_scores(self, request: ScoreRequest, caller: Principal) -> ScoreResponse:
        """A judge standing in for a reward model: the same request and answer, scores on [0, 1]."""
        if request.step_separator is not None or any(i.steps is not None for i in request.items):
            raise InvalidInput("the judge scores whole responses: give each item's response, not its steps")
        judging = self._judge(caller, request.model or "")
        prompts = [i.prompt for i in request.items]
        verdicts, scores = await judging.scores(request.model or "", prompts, [i.response or "" for i in request.items])
        return ScoreResponse(
            model=request.model or "",
            model_version=_judge_version(verdicts),
            scores=scores,
            tokens=[v.prompt_tokens + v.completion_tokens for v in verdicts.verdicts],
            truncated=[False] * len(scores),
        )

    async def compare(self, request: CompareRequest, caller: Principal) -> CompareResponse:
        pairs = request.all_pairs()
        self.limits.items(len(pairs), "pairs")
        if JudgeService.is_judge_model(request.model):
            return await self._judge_compare(request.model or "", pairs, caller)
        model = self.registry.get(request.model)
        a, b = await self.pair_scores(model, pairs, chunked=False)
        comparisons = [
            Comparison(score_a=float(x), score_b=float(y), prob_a=float(p))
            for x, y, p in zip(a, b, _sigmoid(a - b), strict=True)
        ]
        return CompareResponse(model=model.name, model_version=model.version, comparisons=comparisons)

    async def pair_scores(
        self, model: ServedModel, pairs: list[ComparePair], chunked: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores of each pair's two responses. `chunked`: the server's own work (annotation statistics), run as
        requests that each fit the limits instead of being refused by them."""
        prompts = [plain_prompt(p.prompt) for p in pairs for _ in range(2)]
        responses = [r for p in pairs for r in (p.response_a, p.response_b)]
        encoded = await model.encode(prompts, responses)
        if not chunked:
            self.limits.tokens([encoded])
            scores = await model.run(encoded)
        else:
            per_pair = [encoded[i : i + 2] for i in range(0, len(encoded), 2)]
            tokens = [len(x.ids) + len(y.ids) for x, y in per_pair]
            parts = [
                await model.run([e for pair in chunk for e in pair]) for chunk in self.limits.chunks(per_pair, tokens)
            ]
            scores = np.concatenate(parts) if parts else np.empty(0)
        return scores[0::2], scores[1::2]

    async def _judge_compare(self, model: str, pairs: list[ComparePair], caller: Principal) -> CompareResponse:
        """The judge compares pairwise (both orders); its P(a) becomes scores +-logit(P)/2, so that
        prob_a = sigmoid(score_a - score_b) holds here as it does for reward models."""
        judging = self._judge(caller, model)
        verdicts = await judging.compare(model, [(p.prompt, p.response_a, p.response_b) for p in pairs])
        comparisons = []
        for verdict in verdicts.verdicts:
            p = min(max(verdict.score, 1e-6), 1 - 1e-6)
            half = float(np.log(p / (1 - p))) / 2
            comparisons.append(Comparison(score_a=half, score_b=-half, prob_a=verdict.score))
        return CompareResponse(model=model, model_version=_judge_version(verdicts), comparisons=comparisons)

    async def rank(self, request: RankRequest, caller: Principal) -> RankResponse:
        self.limits.items(len(request.responses), "responses")
        if JudgeService.is_judge_model(request.model):
            verdicts, judged = await self._judge(caller, request.model or "").scores(
                request.model or "", [request.prompt] * len(request.responses), request.responses
            )
            name, version, scores = request.model or "", _judge_version(verdicts), np.asarray(judged)
        else:
            model = self.registry.get(request.model)
            name, version = model.name, model.version
            prompt = plain_prompt(request.prompt)
            scores, _ = await self._score(model, [prompt] * len(request.responses), request.responses)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: equal scores keep input order
        return RankResponse(model=name, model_version=version, scores=scores.tolist(), order=order)

    def models(self) -> ModelList:
        default = self.registry.default_name
        return ModelList(models=[m.info(name == default) for name, m in list(self.registry.models.items())])

    def model(self, name: str) -> ModelList:
        return ModelList(models=[self.registry.get(name).info(name == self.registry.default_name)])

    async def openrlhf(self, request: OpenRLHFRewardRequest, model_name: str | None = None) -> OpenRLHFRewardResponse:
        """OpenRLHF's texts split into prompt and response as its own reward_func form splits them."""
        self.limits.items(len(request.query))
        try:
            split_prompts, responses = split_queries(request.query, request.prompts)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        model = self.registry.get(model_name)
        scores, _ = await self._score(model, list(split_prompts), responses)
        return OpenRLHFRewardResponse(
            rewards=scores.tolist(),
            scores=scores.tolist(),
            extra_logs={"normalized_reward": model.normalize(scores).tolist()},
        )
