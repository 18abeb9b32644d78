"""A judge backend for any OpenAI-compatible chat-completions server: vLLM, TGI, Ollama, llama.cpp's server, OpenAI
itself, `transformers serve`. Only the plain HTTP API is used (httpx), so the judge needs no vendor SDK.

What servers differ on, and how this backend copes:

- Log-probabilities: asked for with `logprobs: true, top_logprobs: 20`. A server that ignores them (`transformers
  serve` 5.x does) answers without any, and `option_logprobs` returns None so the caller parses the text instead.
- Continuing a prefix (an assistant message the reply must start with): vLLM's convention, extra fields
  `continue_final_message: true, add_generation_prompt: false`. A server that does not honour them would read the
  prefix as a finished assistant turn and answer a fresh one: a wrong answer, not a missing one. So the first prefix
  request decides, once per backend, whether the server continues prefixes (see `_continues`); when it does not,
  `option_logprobs` returns None for every prefix.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import time
from typing import Any

import httpx

from arbiter.judge.backends.base import BackendError, Completion, OptionLogprobs

logger = logging.getLogger(__name__)

# OpenAI refuses more than 20; vLLM and llama.cpp follow the same cap.
TOP_LOGPROBS = 20
CONTINUE_FIELDS: dict[str, bool] = {"continue_final_message": True, "add_generation_prompt": False}
# 408 is the server giving up on a slow client, so it is worth another try like the 5xx.
RETRY_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER = 30.0


class HTTPBackendError(BackendError):
    """The server answered with an error status. `status` and `body` let a caller tell refusals apart (e.g. a server
    that rejects the prefix-continuation fields) from other failures."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class OpenAIBackend:
    """A `JudgeBackend` over `POST {base_url}/chat/completions`.

    `base_url` includes the API version, as with the openai SDK (`http://127.0.0.1:8001/v1`). The API key is
    `api_key`, else the environment variable named by `api_key_env`, else none (no Authorization header: local
    servers need none). `timeout` bounds each HTTP operation of one attempt; waiting for a concurrency slot does not
    count. Connection errors, 408, 429 and 5xx are retried `max_retries` times with exponential backoff and jitter;
    a timeout is not retried, since a server too slow once is likely too slow again and the caller has a budget.
    `transport` is for tests and custom networking (proxies, TLS), passed to httpx as is; `aclose` closes it."""

    name = "openai"
    # Seconds before the first retry; doubles each retry, up to retry_max_delay. Instance attributes override them.
    retry_base_delay = 0.5
    retry_max_delay = 8.0

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Whether the server continues a prefix: None until the first prefix request finds out (`_continues`). A
        # caller that knows its server (vLLM does) may set it to skip the probe.
        self.continues_prefix: bool | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    async def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0) -> Completion:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        data = await self._post(body)
        message = self._choice(data).get("message") or {}
        # Content is null for a reply that is all tool calls or all reasoning; the judge reads it as empty.
        text = message.get("content") or ""
        prompt_tokens, completion_tokens = _usage(data)
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    async def option_logprobs(
        self, messages: list[dict[str, str]], options: list[str], prefix: str = ""
    ) -> OptionLogprobs | None:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        if prefix:
            if self.continues_prefix is False:
                return None
            body["messages"] = [*messages, {"role": "assistant", "content": prefix}]
            body.update(CONTINUE_FIELDS)
            try:
                data = await self._post(body)
            except HTTPBackendError as error:
                # A server that validates its fields names the ones it refuses (transformers serve: 422 "Unexpected
                # fields ...", OpenAI: 400 "Unrecognized request argument ..."): it cannot continue a prefix.
                if error.status in (400, 422) and any(field in error.body for field in CONTINUE_FIELDS):
                    logger.info("%s refuses to continue a prefix; option log-probabilities after one are None", self)
                    self.continues_prefix = False
                    return None
                raise
        else:
            data = await self._post(body)

        logprobs = _option_logprobs(self._choice(data), options)
        if logprobs is None:
            return None
        prompt_tokens, _ = _usage(data)
        if prefix and self.continues_prefix is None:
            self.continues_prefix = await self._continues(body, prompt_tokens)
            if not self.continues_prefix:
                logger.info("%s ignores continue_final_message; option log-probabilities after a prefix are None", self)
        if prefix and not self.continues_prefix:
            return None
        return OptionLogprobs(logprobs=logprobs, prompt_tokens=prompt_tokens)

    async def aclose(self) -> None:
        client, loop = self._client, self._loop
        self._client = self._semaphore = self._loop = None
        # A client made in another, now finished, event loop cannot be closed from this one; its connections died
        # with that loop.
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.base_url!r}, {self.model!r})"

    async def _continues(self, continued: dict[str, Any], continued_prompt_tokens: int) -> bool:
        """Whether the server honoured the continuation fields of the request `continued`, which asked for them.

        The same request without them makes the chat template close the prefix's turn and open a new assistant turn
        (end-of-turn and header tokens), so a server that honours the fields counts fewer prompt tokens with them
        than without. Equal counts mean the fields changed nothing: either they were ignored, or the server always
        continues a final assistant message (llama.cpp, Ollama); this cannot tell those apart, so it says no, and
        the caller falls back to parsing text rather than risking a wrong answer. Without usage: no, too."""
        plain = {key: value for key, value in continued.items() if key not in CONTINUE_FIELDS}
        plain.pop("logprobs", None)
        plain.pop("top_logprobs", None)
        closed_prompt_tokens, _ = _usage(await self._post(plain))
        return 0 < continued_prompt_tokens < closed_prompt_tokens

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The client and semaphore of the running event loop. Both belong to the loop that made them (pooled
        connections, waiters), so a caller that runs each batch in its own `asyncio.run` gets fresh ones."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._semaphore is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                headers=self._headers, timeout=httpx.Timeout(self.timeout), transport=self._transport
            )
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._client, self._semaphore

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        client, semaphore = self._session()
        url = self.url
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                async with semaphore:
                    response = await client.post(url, json=body)
            except httpx.TimeoutException as error:
                raise BackendError(
                    f"{url} did not answer within {self.timeout} s ({type(error).__name__})", timeout=True
                ) from error
            except httpx.TransportError as error:
                failure = f"could not reach the server: {type(error).__name__}: {error}"
                if attempt + 1 == attempts:
                    raise BackendError(f"{url} failed after {attempts} attempt(s); {failure}") from error
            else:
                if response.is_success:
                    return _json_object(response)
                status = response.status_code
                failure = f"HTTP {status}: {_snippet(response)}"
                if status not in RETRY_STATUSES and status < 500:
                    raise HTTPBackendError(f"{url} answered {failure}", status, response.text)
                if attempt + 1 == attempts:
                    message = f"{url} failed after {attempts} attempt(s); last answer {failure}"
                    raise HTTPBackendError(message, status, response.text)
                retry_after = _retry_after(response)
            delay = min(self.retry_base_delay * 2**attempt, self.retry_max_delay)
            # Jitter spreads the retries of many concurrent requests that failed together.
            delay = random.uniform(delay / 2, delay)
            if retry_after is not None:
                delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
            logger.debug("%s: %s; retrying in %.2f s", url, failure, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _choice(self, data: dict[str, Any]) -> dict[str, Any]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BackendError(f"{self.url} answered without choices: {str(data)[:300]}")
        return choices[0]


def _option_logprobs(choice: dict[str, Any], options: list[str]) -> list[float | None] | None:
    """Each option's log-probability as the first generated token, from the top log-probabilities of that token;
    None where the option was not among them, and None for all when the server gave no log-probabilities."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    candidates: list[tuple[Any, Any]]
    content = logprobs.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        # The generated token itself too: it is normally among its top log-probabilities, but not when a server
        # caps or drops top_logprobs.
        candidates = [(first.get("token"), first.get("logprob"))]
        candidates += [(top.get("token"), top.get("logprob")) for top in first.get("top_logprobs") or []]
    elif isinstance(logprobs.get("top_logprobs"), list) and logprobs["top_logprobs"]:
        # The legacy completions shape, which some servers still use for chat: one {token: logprob} per position.
        candidates = list(logprobs["top_logprobs"][0].items())
    else:
        return None
    wanted = {option.strip() for option in options}
    best: dict[str, float] = {}
    for token, logprob in candidates:
        if not isinstance(token, str) or not isinstance(logprob, (int, float)) or math.isnan(logprob):
            continue
        # Tokenizers split "A" and " A" (and "\nA") into different tokens; all of them mean the option.
        key = token.strip()
        if key in wanted:
            best[key] = max(best.get(key, -math.inf), float(logprob))
    return [best.get(option.strip()) for option in options]


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as error:
        raise BackendError(
            f"{response.url} answered {response.status_code} with no JSON: {_snippet(response)}"
        ) from error
    if not isinstance(data, dict):
        raise BackendError(f"{response.url} answered JSON that is not an object: {_snippet(response)}")
    return data


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _snippet(response: httpx.Response, limit: int = 300) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked to wait (Retry-After: seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
