"""API keys: each a name, the SHA-256 of the key, scopes, and optionally its own rate limit.

The list comes from a YAML or JSON file (`api_keys_file`) and/or the text of a secret (`api_keys`, e.g. the
environment variable ARBITER_API_KEYS filled from a Kubernetes Secret); it is read again on reload. Only hashes
are kept: `arbiter keys new NAME --scopes score,judge` makes a key and prints the entry to add.

    keys:
      - name: trainer-7
        sha256: 9f86d0...        # of the key the trainer sends as "Authorization: Bearer <key>"
        scopes: [score, judge]
        rate_limit: {rps: 50, burst: 100}
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arbiter.clients.operations import Scope

PREFIX = "ark_"


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rps: float = Field(gt=0, description="requests per second, sustained")
    burst: int | None = Field(None, gt=0, description="requests at once (default: twice the rate, at least 1)")

    @property
    def capacity(self) -> float:
        return float(self.burst or max(1.0, 2 * self.rps))


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(min_length=1)
    rate_limit: RateLimit | None = None


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[ApiKey] = Field(default_factory=list)


class KeyListError(ValueError):
    """A key list that cannot be read; the keys in force stay."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def read_keys(path: str | None, text: str | None) -> dict[str, ApiKey]:
    """Keys by hash, from the file and the secret's text (names must be unique across both)."""
    sources = []
    if path:
        try:
            sources.append((path, Path(path).read_text()))
        except OSError as exc:
            raise KeyListError(f"api_keys_file {path}: {exc.strerror or exc}") from exc
    if text:
        sources.append(("api_keys", text))
    found: dict[str, ApiKey] = {}
    names: set[str] = set()
    for where, content in sources:
        try:
            parsed = KeyFile.model_validate(yaml.safe_load(content) or {})
        except (yaml.YAMLError, ValidationError) as exc:
            raise KeyListError(f"{where}: {exc}") from exc
        for key in parsed.keys:
            if key.name in names:
                raise KeyListError(f"{where}: the key name {key.name!r} is used twice")
            names.add(key.name)
            found[key.sha256] = key
    return found
