"""RewardClient and AsyncRewardClient: one interface over HTTP and gRPC, chosen by the URL.

    from arbiter.clients import RewardClient

    with RewardClient("http://127.0.0.1:8000") as client:          # or "grpc://127.0.0.1:50051"
        client.score("What is 2+2?", ["4", "5"]).scores              # one prompt, many responses
        client.score(prompts, responses).scores                      # one prompt per response
        client.compare("Say hi", ["hello"], ["go away"]).comparisons[0].prob_a
        client.rank("Say hi", ["hello", "go away", "hi!"]).order

Large calls are cut into chunks of `chunk_size` items sent concurrently (at most `max_concurrency` at once);
each chunk is retried on queue-full / not-ready / connection failures with exponential backoff and jitter,
honouring the server's Retry-After. With `on_failure="nan"` the items of a chunk that still fails come back as
NaN instead of failing the whole call, which is what an RL loop usually wants from one bad request.

The sync client runs the async one on a private event loop in a background thread, so it chunks and retries
concurrently too, and is safe to call from several threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeGuard, TypeVar, cast

from pydantic import BaseModel, JsonValue

from arbiter.clients import operations as ops
from arbiter.clients import protocol as wire
from arbiter.clients.errors import RewardServerError
from arbiter.clients.operations import Operation
from arbiter.clients.retry import Retry
from arbiter.clients.transport import Transport, open_transport

log = logging.getLogger("arbiter.client")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
PromptLike = str | Sequence[Mapping[str, str]] | Sequence[wire.ChatMessage]
OnFailure = Literal["raise", "nan"]


def is_single_prompt(value: object) -> TypeGuard[PromptLike]:
    """A string, or a conversation (a list of role/content messages), as opposed to a list of prompts."""
    if isinstance(value, str):
        return True
    if isinstance(value, Sequence) and value:
        first = value[0]
        return isinstance(first, wire.ChatMessage | Mapping)
    return False


def as_prompt(value: PromptLike) -> wire.Prompt:
    if isinstance(value, str):
        return value
    return [m if isinstance(m, wire.ChatMessage) else wire.ChatMessage(**m) for m in value]


def per_item(prompts: PromptLike | Sequence[PromptLike], count: int) -> list[wire.Prompt]:
    """One prompt for every response, or the prompt given once for all of them."""
    if is_single_prompt(prompts):
        return [as_prompt(prompts)] * count
    listed = list(cast("Sequence[PromptLike]", prompts))  # not one prompt, so one per response
    if len(listed) != count:
        raise ValueError(f"{len(listed)} prompts for {count} responses")
    return [as_prompt(p) for p in listed]


def chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


API_KEY_ENV = "ARBITER_API_KEY"


class AsyncRewardClient:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        model: str | None = None,
        timeout: float = 60.0,
        retry: Retry | None = None,
        chunk_size: int = 64,
        max_concurrency: int = 8,
        on_failure: OnFailure = "raise",
        headers: dict[str, str] | None = None,
        api_key: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        if chunk_size < 1 or max_concurrency < 1:
            raise ValueError("chunk_size and max_concurrency must be at least 1")
        api_key = api_key or os.environ.get(API_KEY_ENV)  # trainers' adapters pick it up without a flag
        if api_key:
            headers = {**(headers or {}), "Authorization": f"Bearer {api_key}"}
        self.url, self.model, self.timeout = url, model, timeout
        self.retry = retry or Retry()
        self.chunk_size, self.max_concurrency, self.on_failure = chunk_size, max_concurrency, on_failure
        self._headers = headers
        self._transport = transport
        self._limit: asyncio.Semaphore | None = None

    # -- the calls ---------------------------------------------------------------------------------------------

    async def score(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        responses: Sequence[str | Sequence[str]],
        *,
        model: str | None = None,
        normalize: bool = False,
        sigmoid: bool = False,
        step_aggregate: wire.StepAggregate = "min",
        step_separator: str | None = None,
    ) -> wire.ScoreResponse:
        """Scores of `responses`, each to its prompt (or to the one prompt given). Raw logits by default. For a
        process reward model a response may be its list of steps; `steps` in the answer holds each step's score."""
        items = [
            wire.ScoreItem(prompt=p, response=r) if isinstance(r, str) else wire.ScoreItem(prompt=p, steps=list(r))
            for p, r in zip(per_item(prompts, len(responses)), responses, strict=True)
        ]

        def request(part: range) -> wire.ScoreRequest:
            return wire.ScoreRequest(
                model=model or self.model,
                items=items[part.start : part.stop],
                normalize=normalize,
                sigmoid=sigmoid,
                step_aggregate=step_aggregate,
                step_separator=step_separator,
            )

        parts = await self._chunked(ops.SCORE, request, len(items), wire.ScoreResponse)
        return merge_scores(parts, normalize)

    async def compare(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        *,
        model: str | None = None,
    ) -> wire.CompareResponse:
        """For each pair, both scores and P(a preferred) = sigmoid(score_a - score_b)."""
        if len(responses_a) != len(responses_b):
            raise ValueError(f"{len(responses_a)} responses_a for {len(responses_b)} responses_b")
        pairs = [
            wire.ComparePair(prompt=p, response_a=a, response_b=b)
            for p, a, b in zip(per_item(prompts, len(responses_a)), responses_a, responses_b, strict=True)
        ]

        def request(part: range) -> wire.CompareRequest:
            return wire.CompareRequest(model=model or self.model, pairs=pairs[part.start : part.stop])

        # A pair is two sequences on the server: halve the chunk so a chunk means the same work everywhere.
        half = max(1, self.chunk_size // 2)
        parts = await self._chunked(ops.COMPARE, request, len(pairs), wire.CompareResponse, half)
        return merge_comparisons(parts)

    async def rank(
        self, prompt: PromptLike, responses: Sequence[str], *, model: str | None = None
    ) -> wire.RankResponse:
        """The responses' scores and their order, best first. One request: a ranking is not split."""
        request = wire.RankRequest(model=model or self.model, prompt=as_prompt(prompt), responses=list(responses))
        return await self._with_retries(lambda: self._call(ops.RANK, request, wire.RankResponse))

    async def models(self) -> list[wire.ModelInfo]:
        listed = await self._with_retries(lambda: self._call(ops.MODELS, None, wire.ModelList))
        return listed.models

    async def reward(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        responses: Sequence[str],
        *,
        spec: str | None = None,
        groups: Sequence[str | None] | None = None,
        unsafe: Sequence[bool | None] | None = None,
        labels: Sequence[JsonValue] | None = None,
        data_sources: Sequence[str | None] | None = None,
        update_stats: bool = True,
    ) -> wire.RewardResponse:
        """Rewards from a reward spec (the server's default spec when None), with each component's values.

        One request, never chunked: batch transforms (whitening, group normalization) must see the whole batch.
        `groups` tags the responses to the same prompt (GRPO); `unsafe` flags prompts for the Llama 2 gate;
        `labels` are the references verifier components check against (a final answer, a list of them, HumanEval's
        tests), and `data_sources` route items to the components meant for them. `update_stats=False` scores under
        the spec's running statistics as they stand without moving them (evaluation beside a live run)."""
        count = len(responses)
        given = (("groups", groups), ("unsafe", unsafe), ("labels", labels), ("data_sources", data_sources))
        for name, values in given:
            if values is not None and len(values) != count:
                raise ValueError(f"{len(values)} {name} for {count} responses")
        items = [
            wire.RewardItem(
                prompt=p,
                response=r,
                group=groups[i] if groups is not None else None,
                unsafe=unsafe[i] if unsafe is not None else None,
                label=labels[i] if labels is not None else None,
                data_source=data_sources[i] if data_sources is not None else None,
            )
            for i, (p, r) in enumerate(zip(per_item(prompts, count), responses, strict=True))
        ]
        request = wire.RewardRequest(spec=spec, items=items, update_stats=update_stats)
        return await self._with_retries(lambda: self._call(ops.REWARD, request, wire.RewardResponse))

    # -- plumbing ----------------------------------------------------------------------------------------------

    async def _call(self, operation: Operation, request: BaseModel | None, response_type: type[M]) -> M:
        if self._transport is None:  # made on first use, inside the loop that will drive it (grpc.aio needs that)
            self._transport = open_transport(self.url, self._headers, max_connections=self.max_concurrency * 2)
        return await self._transport.call(operation, request, response_type, self.timeout)

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for n in range(self.retry.attempts):
            try:
                return await attempt()
            except RewardServerError as exc:
                if not exc.retryable or n == self.retry.attempts - 1:
                    raise
                delay = self.retry.delay(n, exc.retry_after)
                log.info("retrying in %.2f s after %s (try %d of %d)", delay, exc.code, n + 1, self.retry.attempts)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _chunked(
        self,
        operation: Operation,
        request: Callable[[range], BaseModel],
        count: int,
        response_type: type[M],
        chunk_size: int | None = None,
    ) -> list[M | range]:
        """Each chunk's answer, or (with on_failure="nan") the chunk's range where it failed for good."""
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.max_concurrency)
        limit = self._limit

        async def one(part: range) -> M | range:
            async with limit:
                try:
                    return await self._with_retries(lambda: self._call(operation, request(part), response_type))
                except RewardServerError:
                    if self.on_failure == "nan":
                        return part
                    raise

        return list(await asyncio.gather(*(one(part) for part in chunks(count, chunk_size or self.chunk_size))))

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def _first_answer(parts: Sequence[BaseModel | range]) -> Any:
    for part in parts:
        if not isinstance(part, range):
            return part
    return None


def merge_scores(parts: Sequence[wire.ScoreResponse | range], normalize: bool) -> wire.ScoreResponse:
    first = _first_answer(parts)
    scores: list[float] = []
    normalized: list[float] = []
    tokens: list[int] = []
    truncated: list[bool] = []
    objectives: list[dict[str, float]] = []
    steps: list[wire.StepScores] = []
    names = first.objectives[0].keys() if first and first.objectives else None
    failed = wire.StepScores(probabilities=[], min=math.nan, last=math.nan, product=math.nan, mean=math.nan)
    for part in parts:
        if isinstance(part, range):
            scores += [math.nan] * len(part)
            normalized += [math.nan] * len(part)
            tokens += [0] * len(part)
            truncated += [False] * len(part)
            objectives += [dict.fromkeys(names or (), math.nan) for _ in part]
            steps += [failed] * len(part)
        else:
            scores += part.scores
            normalized += part.normalized_scores or []
            tokens += part.tokens
            truncated += part.truncated
            objectives += part.objectives or []
            steps += part.steps or []
    return wire.ScoreResponse(
        model=first.model if first else "",
        model_version=first.model_version if first else "",
        scores=scores,
        normalized_scores=normalized if normalize else None,
        tokens=tokens,
        truncated=truncated,
        objectives=objectives if names is not None else None,
        steps=steps if first and first.steps is not None else None,
    )


def merge_comparisons(parts: Sequence[wire.CompareResponse | range]) -> wire.CompareResponse:
    first = _first_answer(parts)
    failed = wire.Comparison(score_a=math.nan, score_b=math.nan, prob_a=math.nan)
    comparisons: list[wire.Comparison] = []
    for part in parts:
        comparisons += [failed] * len(part) if isinstance(part, range) else part.comparisons
    return wire.CompareResponse(
        model=first.model if first else "", model_version=first.model_version if first else "", comparisons=comparisons
    )


class _LoopThread:
    """A private event loop in a daemon thread: the sync client's calls run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="arbiter-client", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class RewardClient:
    """The blocking face of AsyncRewardClient: the same arguments, the same answers."""

    def __init__(self, url: str = "http://127.0.0.1:8000", **options: Any) -> None:
        self._loop = _LoopThread()
        self._client = AsyncRewardClient(url, **options)

    @property
    def url(self) -> str:
        return self._client.url

    def score(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        responses: Sequence[str | Sequence[str]],
        *,
        model: str | None = None,
        normalize: bool = False,
        sigmoid: bool = False,
        step_aggregate: wire.StepAggregate = "min",
        step_separator: str | None = None,
    ) -> wire.ScoreResponse:
        return self._loop.run(
            self._client.score(
                prompts,
                responses,
                model=model,
                normalize=normalize,
                sigmoid=sigmoid,
                step_aggregate=step_aggregate,
                step_separator=step_separator,
            )
        )

    def compare(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        *,
        model: str | None = None,
    ) -> wire.CompareResponse:
        return self._loop.run(self._client.compare(prompts, responses_a, responses_b, model=model))

    def rank(self, prompt: PromptLike, responses: Sequence[str], *, model: str | None = None) -> wire.RankResponse:
        return self._loop.run(self._client.rank(prompt, responses, model=model))

    def models(self) -> list[wire.ModelInfo]:
        return self._loop.run(self._client.models())

    def reward(
        self,
        prompts: PromptLike | Sequence[PromptLike],
        responses: Sequence[str],
        *,
        spec: str | None = None,
        groups: Sequence[str | None] | None = None,
        unsafe: Sequence[bool | None] | None = None,
        labels: Sequence[JsonValue] | None = None,
        data_sources: Sequence[str | None] | None = None,
        update_stats: bool = True,
    ) -> wire.RewardResponse:
        return self._loop.run(
            self._client.reward(
                prompts,
                responses,
                spec=spec,
                groups=groups,
                unsafe=unsafe,
                labels=labels,
                data_sources=data_sources,
                update_stats=update_stats,
            )
        )

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self._client.aclose())
        self._loop.stop()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
