"""The OpenAI-compatible judge backend: against a real `transformers serve` (SmolLM2-135M-Instruct on CPU), and,
for what that server does not do (log-probabilities, continuing a prefix, retries on 5xx/429), against canned
answers in vLLM's shapes."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from arbiter.judge.backends.base import BackendError, Completion, JudgeBackend
from arbiter.judge.backends.openai_compat import HTTPBackendError, OpenAIBackend
from tests.judge_server import OpenAIServer, transformers_serve
from tests.server import free_port

T = TypeVar("T")

QUESTION = [{"role": "user", "content": "Which is a color? (A) table (B) blue. Answer with the letter only."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIServer]:
    pytest.importorskip("fastapi")
    pytest.importorskip(
        "openai", reason="transformers serve needs the serving extra: pip install transformers[serving]"
    )
    with transformers_serve(tmp_path_factory.mktemp("judge-server")) as running:
        yield running


def using(backend: OpenAIBackend, call: Callable[[OpenAIBackend], Awaitable[T]]) -> T:
    async def run() -> T:
        try:
            return await call(backend)
        finally:
            await backend.aclose()

    return asyncio.run(run())


class CountingTransport(httpx.AsyncBaseTransport):
    """Passes requests on to `inner`, counting them and the most that were in flight at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.most_in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- against the real server ---


def test_complete_returns_text_and_usage(server: OpenAIServer) -> None:
    backend = OpenAIBackend(server.base_url, server.model)
    assert isinstance(backend, OpenAIBackend) and backend.name == "openai" and backend.model == server.model
    _: JudgeBackend = backend  # what the judge holds
    result = using(backend, lambda b: b.complete(QUESTION, max_tokens=5))
    assert isinstance(result, Completion)
    assert result.text.strip()
    assert result.prompt_tokens > 10
    assert 1 <= result.completion_tokens <= 5


def test_option_logprobs_are_none_or_log_probabilities(server: OpenAIServer) -> None:
    backend = OpenAIBackend(server.base_url, server.model)
    result = using(backend, lambda b: b.option_logprobs(QUESTION, ["A", "B"]))
    # transformers serve 5.24 ignores `logprobs`, so None (the judge then parses text); a server that gives them must
    # give one entry per option, each a log-probability or None for an option outside the top 20.
    if result is not None:
        assert len(result.logprobs) == 2
        assert all(lp is None or (lp <= 0 and not math.isnan(lp)) for lp in result.logprobs)
        assert result.prompt_tokens > 10


def test_prefix_the_server_cannot_continue_gives_none(server: OpenAIServer) -> None:
    transport = CountingTransport()
    backend = OpenAIBackend(server.base_url, server.model, transport=transport)

    async def twice(b: OpenAIBackend) -> list[Any]:
        return [await b.option_logprobs(QUESTION, ["A", "B"], prefix="The answer is (") for _ in range(2)]

    assert using(backend, twice) == [None, None]
    # It refused the continuation fields (422): the backend remembers and asks no more.
    assert backend.continues_prefix is False
    assert len(transport.requests) == 1
    assert transport.requests[0]["continue_final_message"] is True


def test_concurrency_is_capped_and_every_call_succeeds(server: OpenAIServer) -> None:
    transport = CountingTransport()
    backend = OpenAIBackend(server.base_url, server.model, concurrency=3, transport=transport)

    async def many(b: OpenAIBackend) -> list[Completion]:
        return await asyncio.gather(*(b.complete(QUESTION, max_tokens=2) for _ in range(8)))

    results = using(backend, many)
    assert len(results) == 8 and all(r.completion_tokens >= 1 for r in results)
    assert transport.most_in_flight == 3


def test_a_wrong_model_name_is_a_4xx_and_not_retried(server: OpenAIServer) -> None:
    transport = CountingTransport()
    backend = OpenAIBackend(server.base_url, "no-such-model", transport=transport)
    with pytest.raises(HTTPBackendError) as caught:
        using(backend, lambda b: b.complete(QUESTION, max_tokens=1))
    assert caught.value.status == 400 and not caught.value.timeout
    assert server.base_url in str(caught.value) and "400" in str(caught.value)
    assert len(transport.requests) == 1


def test_a_tiny_timeout_is_a_timeout(server: OpenAIServer) -> None:
    backend = OpenAIBackend(server.base_url, server.model, timeout=0.001)
    with pytest.raises(BackendError) as caught:
        using(backend, lambda b: b.complete(QUESTION, max_tokens=1))
    assert caught.value.timeout
    assert server.base_url in str(caught.value)


def test_a_closed_port_fails_after_the_retries() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    transport = CountingTransport()
    backend = OpenAIBackend(base_url, "m", max_retries=2, transport=transport)
    backend.retry_base_delay = 0.05
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        using(backend, lambda b: b.complete(QUESTION, max_tokens=1))
    assert not caught.value.timeout
    assert base_url in str(caught.value) and "3 attempt" in str(caught.value)
    assert len(transport.requests) == 3
    assert time.monotonic() - started < 5


# --- against canned answers: what transformers serve does not do ---


def vllm_reply(
    content: str = "B", top: dict[str, float] | None = None, prompt_tokens: int | None = 40
) -> dict[str, Any]:
    """A chat completion as vLLM writes it, with the first token's top log-probabilities when `top` is given."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "length",
    }
    if top is not None:
        tops = [{"token": token, "logprob": lp, "bytes": list(token.encode())} for token, lp in top.items()]
        first = max(tops, key=lambda t: t["logprob"])
        choice["logprobs"] = {"content": [{**first, "top_logprobs": tops}]}
    reply: dict[str, Any] = {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}
    if prompt_tokens is not None:
        reply["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
    return reply


def canned(handler: Callable[[dict[str, Any]], httpx.Response]) -> CountingTransport:
    return CountingTransport(httpx.MockTransport(lambda request: handler(json.loads(request.content))))


def test_option_logprobs_keep_the_best_spelling_and_leave_unseen_options_none() -> None:
    top = {"B": -0.3, " B": -0.1, "A": -2.0, "\nA": -3.0, "blue": -4.0}
    transport = canned(lambda body: httpx.Response(200, json=vllm_reply(top=top)))
    backend = OpenAIBackend("http://judge.test/v1", "m", transport=transport)
    result = using(backend, lambda b: b.option_logprobs(QUESTION, ["A", "B", "C"]))
    assert result is not None
    assert result.logprobs == [-2.0, -0.1, None] and result.prompt_tokens == 40
    body = transport.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert "continue_final_message" not in body


def test_no_logprobs_in_the_reply_gives_none() -> None:
    transport = canned(lambda body: httpx.Response(200, json=vllm_reply()))
    backend = OpenAIBackend("http://judge.test/v1", "m", transport=transport)
    assert using(backend, lambda b: b.option_logprobs(QUESTION, ["A", "B"])) is None


def continuing_server(honours: bool) -> CountingTransport:
    """Counts 40 prompt tokens for the conversation; closing the prefix's turn and opening a new one adds 4, which a
    server that honours continue_final_message leaves out."""

    def handler(body: dict[str, Any]) -> httpx.Response:
        continued = honours and body.get("continue_final_message") is True
        prompt_tokens = 40 if continued else 44
        top = {"A": -1.5, "B": -0.5} if body.get("logprobs") else None
        return httpx.Response(200, json=vllm_reply(top=top, prompt_tokens=prompt_tokens))

    return canned(handler)


def test_a_prefix_the_server_continues_gives_logprobs() -> None:
    transport = continuing_server(honours=True)
    backend = OpenAIBackend("http://judge.test/v1", "m", transport=transport)

    async def twice(b: OpenAIBackend) -> list[Any]:
        return [await b.option_logprobs(QUESTION, ["A", "B"], prefix="The answer is (") for _ in range(2)]

    first, second = using(backend, twice)
    assert first is not None and first.logprobs == [-1.5, -0.5] and second == first
    assert backend.continues_prefix is True
    sent = transport.requests[0]
    assert sent["messages"][-1] == {"role": "assistant", "content": "The answer is ("}
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    # One probe without the fields, once: 2 option requests + 1 probe.
    assert len(transport.requests) == 3 and "continue_final_message" not in transport.requests[1]


def test_a_prefix_the_server_ignores_gives_none() -> None:
    transport = continuing_server(honours=False)
    backend = OpenAIBackend("http://judge.test/v1", "m", transport=transport)
    assert using(backend, lambda b: b.option_logprobs(QUESTION, ["A", "B"], prefix="The answer is (")) is None
    assert backend.continues_prefix is False
    # Without a prefix the log-probabilities are still used.
    assert using(backend, lambda b: b.option_logprobs(QUESTION, ["A", "B"])) is not None


def test_5xx_and_429_are_retried_and_the_key_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test")
    answers = iter(
        [
            httpx.Response(503, text="loading"),
            httpx.Response(429, headers={"Retry-After": "0.01"}, text="slow down"),
            httpx.Response(200, json=vllm_reply(content="B", prompt_tokens=None)),
        ]
    )
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("authorization"))
        return next(answers)

    backend = OpenAIBackend(
        "http://judge.test/v1/", "m", api_key_env="JUDGE_TEST_KEY", transport=httpx.MockTransport(handler)
    )
    backend.retry_base_delay = 0.01
    result = using(backend, lambda b: b.complete(QUESTION, max_tokens=3))
    # No usage in the reply: zeros.
    assert result == Completion(text="B", prompt_tokens=0, completion_tokens=0)
    assert keys == ["Bearer sk-test"] * 3


def test_a_server_that_keeps_failing_names_the_status_and_body() -> None:
    transport = canned(lambda body: httpx.Response(502, text="upstream exploded"))
    backend = OpenAIBackend("http://judge.test/v1", "m", max_retries=1, transport=transport)
    backend.retry_base_delay = 0.01
    with pytest.raises(HTTPBackendError) as caught:
        using(backend, lambda b: b.complete(QUESTION, max_tokens=1))
    message = str(caught.value)
    assert "http://judge.test/v1/chat/completions" in message and "502" in message and "upstream exploded" in message
    assert not caught.value.timeout and len(transport.requests) == 2


def test_no_key_no_authorization_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vllm_reply())

    backend = OpenAIBackend("http://judge.test/v1", "m", transport=httpx.MockTransport(handler))
    using(backend, lambda b: b.complete(QUESTION, max_tokens=1))
    assert "authorization" not in seen[0].headers


def test_one_backend_serves_successive_event_loops() -> None:
    transport = canned(lambda body: httpx.Response(200, json=vllm_reply()))
    backend = OpenAIBackend("http://judge.test/v1", "m", transport=transport)
    # A caller that runs each batch in its own asyncio.run: the client and semaphore follow the loop.
    for _ in range(2):
        assert asyncio.run(backend.complete(QUESTION, max_tokens=1)).text == "B"
    asyncio.run(backend.aclose())
