"""How to reach and keep the LLM judge: its backend, model, constitutions and verdict cache, declared once.

The server's settings take these fields as they are (so `judge_backend` is a key of its YAML file, the variable
ARBITER_JUDGE_BACKEND and the flag --judge-backend), and `arbiter label` and `arbiter eval-judge` make the same
flags from them. The names keep their `judge_` prefix because they sit among the server's other settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from arbiter.judge.backends import open_backend
from arbiter.judge.backends.base import JudgeBackend
from arbiter.judge.cache import VerdictCache
from arbiter.judge.constitution import ConstitutionLibrary
from arbiter.judge.judging import Judge


class JudgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judge_backend: Literal["off", "local", "openai"] = Field(
        "local", description="the LLM judge: in process (transformers), an OpenAI-compatible server, or off"
    )
    judge_model: str = Field(
        "smollm2", description="local: a folder, hub name or alias (smollm2); openai: the model name to ask for"
    )
    judge_base_url: str | None = Field(None, description="openai: the server's base URL, e.g. http://host:8001/v1")
    judge_api_key_env: str = Field("OPENAI_API_KEY", description="openai: the environment variable with the key")
    judge_timeout_s: float = Field(
        60.0, gt=0, description="openai: seconds per backend call (beyond it, the server answers 504)"
    )
    judge_concurrency: int = Field(8, gt=0, description="openai: backend calls in flight at most")
    constitutions: list[str] = Field(
        default_factory=list, description="constitution files or folders of *.yaml, beside the built-in ones"
    )
    default_constitution: str = Field("default", description="the constitution used when a request names none")
    judge_max_reasoning_tokens: int = Field(
        160, gt=0, description="tokens the judge may write before its score or choice (a rationale, a chain of thought)"
    )
    judge_cache_size: int = Field(100_000, ge=0, description="verdicts kept in memory (0: no cache)")
    judge_cache_path: str | None = Field(None, description="SQLite file that keeps verdicts across restarts")

    def open_judge(self, backend: JudgeBackend, library: ConstitutionLibrary) -> Judge:
        return Judge(backend, library, self.open_cache(), self.default_constitution, self.judge_max_reasoning_tokens)

    def open_library(self) -> ConstitutionLibrary:
        """The built-in constitutions and the configured ones; ConstitutionError on a bad file, NotFound when the
        default constitution is not among them."""
        library = ConstitutionLibrary([Path(p) for p in self.constitutions])
        library.get(self.default_constitution)
        return library

    def open_backend(self) -> JudgeBackend | None:
        """None when the judge is off."""
        if self.judge_backend == "off":
            return None
        return open_backend(
            self.judge_backend,
            self.judge_model,
            self.judge_base_url,
            self.judge_api_key_env,
            self.judge_timeout_s,
            self.judge_concurrency,
        )

    def open_cache(self) -> VerdictCache | None:
        """None when no verdict is to be kept."""
        if not self.judge_cache_size:
            return None
        return VerdictCache(self.judge_cache_size, Path(self.judge_cache_path) if self.judge_cache_path else None)
