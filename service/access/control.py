"""The one check both faces make before any work: is the key known, may it do this operation, has it a token left.

Auth is `on`, `off`, or `auto`: off when the server listens on loopback only (a laptop, a sidecar), on otherwise.
With auth off every caller may use every scoring, judging and annotation operation, and rate limits (if set) apply
per client address; admin operations still need a key with the admin scope unless `admin_open` says otherwise,
since any web page open on that machine can reach a loopback server.

The caller's identity (a Principal) travels into the runtime, which asks it again for the scopes that depend on
what a request names: a judge model on /v1/score or a spec with a judge component needs `judge`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import SecretStr

from arbiter.clients.operations import SCOPES, Operation, Scope
from arbiter.errors import Forbidden, InvalidInput, RateLimited, Unauthorized
from arbiter.service.access.keys import ApiKey, KeyListError, digest, read_keys
from arbiter.service.access.limits import RateLimiter

log = logging.getLogger("arbiter.access")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do. With auth off, an anonymous caller holds every scope but admin."""

    name: str
    scopes: frozenset[Scope]
    key: ApiKey | None = None  # its own rate limit, for the tokens a stream takes per message

    def require(self, scope: Scope, why: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"{why} needs the {scope!r} scope, which {self.name!r} lacks", details={"scope": scope})


# The server's own work (canaries, annotation statistics) acts with every scope.
INTERNAL = Principal("internal", frozenset(SCOPES))


@dataclass(frozen=True)
class AccessPolicy:
    """Who may call and how often (settings of the same names)."""

    auth: Literal["auto", "on", "off"]
    host: str
    api_keys_file: str | None
    api_keys: SecretStr | None
    admin_open: bool
    rate_limit_rps: float
    rate_limit_burst: int
    redis_url: str | None

    @property
    def enabled(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and self.host not in LOOPBACK)


class AccessControl:
    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy
        self.enabled = policy.enabled
        self.keys: dict[str, ApiKey] = {}
        self.error: str | None = None  # a key list that could not be read at start: no key works, not ready
        try:
            self.keys = read_keys(policy.api_keys_file, self._secret())
        except KeyListError as exc:
            self.error = str(exc)
            log.error("api keys not read; keyed routes answer 401", extra={"reason": self.error})
        self.limiter = RateLimiter(policy.redis_url)
        if self.enabled and not self.keys:
            log.warning("auth is on and no API keys are configured: every keyed route answers 401")

    def reload(self) -> int:
        """Reads the key list again; a list that cannot be read keeps the keys in force (400)."""
        try:
            self.keys = read_keys(self.policy.api_keys_file, self._secret())
        except KeyListError as exc:
            log.error("api keys not reloaded; the keys in force stay", extra={"reason": str(exc)})
            raise InvalidInput(f"api keys not reloaded: {exc}") from exc
        self.error = None
        log.info("api keys reloaded", extra={"keys": len(self.keys)})
        return len(self.keys)

    def _secret(self) -> str | None:
        return self.policy.api_keys.get_secret_value() if self.policy.api_keys else None

    def key(self, bearer: str | None) -> ApiKey | None:
        return self.keys.get(digest(bearer)) if bearer else None

    async def admit(self, operation: Operation, bearer: str | None, client: str, rate: bool = True) -> Principal:
        """The caller of `operation`, allowed its scope and within its rate limit; else 401, 403 or 429.

        `client` is the caller's address without its port, so that new connections share one bucket. `rate`: take
        a token now (a stream takes one per message instead, through `limit`)."""
        limited = operation if rate else replace(operation, limits=operation.limits - {"rate"})
        if operation.scope == "open":
            return Principal("anonymous", frozenset())
        if not self.enabled and (operation.scope != "admin" or self.policy.admin_open):
            await self._limit(limited, f"client:{client}", None)
            return Principal("anonymous", frozenset(s for s in SCOPES if s != "admin" or self.policy.admin_open))
        key = self.key(bearer)
        if key is None:
            # Unknown and missing keys share their address's bucket: a made-up key per request buys nothing.
            await self._limit(limited, f"client:{client}", None)
            if operation.annotators:
                return Principal("annotator", frozenset())  # the preference store checks annotators' own keys
            if bearer:
                raise Unauthorized("unknown API key")
            if operation.scope == "admin" and not self.enabled:
                raise Unauthorized(
                    "admin operations need an API key with the admin scope, also on loopback (or admin_open)"
                )
            raise Unauthorized("this operation needs an API key: 'Authorization: Bearer <key>'")
        principal = Principal(key.name, frozenset(key.scopes), key)
        principal.require(operation.scope, f"the operation {operation.name!r}")
        await self._limit(limited, f"key:{key.name}", key)
        return principal

    async def limit(self, operation: Operation, principal: Principal, client: str) -> None:
        """One more token for a caller already admitted (each message on a stream)."""
        key = principal.key
        await self._limit(operation, f"key:{key.name}" if key else f"client:{client}", key)

    async def _limit(self, operation: Operation, bucket: str, key: ApiKey | None) -> None:
        if "rate" not in operation.limits:
            return
        own = key.rate_limit if key is not None else None
        rps = own.rps if own else self.policy.rate_limit_rps
        if not rps:
            return
        capacity = own.capacity if own else float(self.policy.rate_limit_burst or max(1.0, 2 * rps))
        wait = await self.limiter.take(bucket, rps, capacity)
        if wait is not None:
            raise RateLimited(f"rate limit of {rps:g} requests/s reached; retry later", retry_after=wait)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
