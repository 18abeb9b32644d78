"""The one check both faces make before any work: is the key known, may it do this, has it a token left.

Auth is `on`, `off`, or `auto`: off when the server listens on loopback only (a laptop, a sidecar), on otherwise.
With auth off every caller may do everything, and rate limits (if set) apply per client address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from arbiter.errors import Forbidden, InvalidInput, RateLimited, Unauthorized
from arbiter.service.access.keys import ApiKey, KeyListError, Scope, digest, read_keys
from arbiter.service.access.limits import Buckets, MemoryBuckets, RedisBuckets
from arbiter.service.settings import ServerSettings

log = logging.getLogger("arbiter.access")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class Principal:
    name: str
    key: ApiKey | None  # None when auth is off

    def may(self, scope: Scope) -> bool:
        return self.key is None or scope in self.key.scopes


class AccessControl:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.enabled = settings.auth == "on" or (settings.auth == "auto" and settings.host not in LOOPBACK)
        self.keys: dict[str, ApiKey] = {}
        self.error: str | None = None  # a key list that could not be read at start: no key works, not ready
        try:
            self.keys = read_keys(settings.api_keys_file, self._secret())
        except KeyListError as exc:
            self.error = str(exc)
            log.error("api keys not read; keyed routes answer 401", extra={"reason": self.error})
        self.buckets: Buckets = RedisBuckets(settings.redis_url) if settings.redis_url else MemoryBuckets()
        if self.enabled and not self.keys:
            log.warning("auth is on and no API keys are configured: every keyed route answers 401")

    def reload(self) -> int:
        """Reads the key list again; a list that cannot be read keeps the keys in force (400)."""
        try:
            self.keys = read_keys(self.settings.api_keys_file, self._secret())
        except KeyListError as exc:
            log.error("api keys not reloaded; the keys in force stay", extra={"reason": str(exc)})
            raise InvalidInput(f"api keys not reloaded: {exc}") from exc
        self.error = None
        log.info("api keys reloaded", extra={"keys": len(self.keys)})
        return len(self.keys)

    def _secret(self) -> str | None:
        return self.settings.api_keys.get_secret_value() if self.settings.api_keys else None

    def key(self, bearer: str | None) -> ApiKey | None:
        return self.keys.get(digest(bearer)) if bearer else None

    async def admit(self, bearer: str | None, scope: Scope, client: str) -> Principal:
        """The caller, once known, allowed `scope` and within its rate limit; else 401, 403 or 429."""
        if not self.enabled:
            principal = Principal("anonymous", None)
            await self.limit(f"client:{client}", None)
            return principal
        if not bearer:
            raise Unauthorized("this route needs an API key: 'Authorization: Bearer <key>'")
        key = self.key(bearer)
        if key is None:
            raise Unauthorized("unknown API key")
        if scope not in key.scopes:
            raise Forbidden(f"the key {key.name!r} has no {scope!r} scope", details={"scopes": key.scopes})
        await self.limit(f"key:{key.name}", key)
        return Principal(key.name, key)

    async def limit(self, bucket: str, key: ApiKey | None) -> None:
        limit = key.rate_limit if key is not None and key.rate_limit is not None else None
        rps = limit.rps if limit else self.settings.rate_limit_rps
        if not rps:
            return
        capacity = limit.capacity if limit else float(self.settings.rate_limit_burst or max(1.0, 2 * rps))
        wait = await self.buckets.take(bucket, rps, capacity)
        if wait is not None:
            raise RateLimited(f"rate limit of {rps:g} requests/s reached; retry later", retry_after=wait)

    async def aclose(self) -> None:
        await self.buckets.aclose()


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
