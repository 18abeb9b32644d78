"""Where the judge's model runs: a local transformers model, or any OpenAI-compatible chat server."""

from __future__ import annotations

from typing import Literal

from arbiter.judge.backends.base import JudgeBackend


def open_backend(
    kind: Literal["local", "openai"],
    model: str,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
    concurrency: int = 8,
) -> JudgeBackend:
    if kind == "local":
        from arbiter.judge.backends.local import LocalBackend

        return LocalBackend(model)
    if not base_url:
        raise ValueError("an OpenAI-compatible judge needs its base URL (judge_base_url / --judge-base-url)")
    from arbiter.judge.backends.openai_compat import OpenAIBackend

    return OpenAIBackend(base_url, model, api_key_env=api_key_env, timeout=timeout, concurrency=concurrency)
