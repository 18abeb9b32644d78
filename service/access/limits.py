"""Token buckets: `rps` tokens a second up to `capacity`; a request takes one or is told when to come back.

In memory for one replica; in Redis (one atomic script, Redis's own clock) when replicas share the limits. If Redis
cannot be reached the request is let through and the failure logged: a rate limiter must not take scoring down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger("arbiter.access")


class Buckets(Protocol):
    async def take(self, name: str, rps: float, capacity: float) -> float | None:
        """None when a token was taken, else the seconds until one is there."""
        ...

    async def aclose(self) -> None: ...


class MemoryBuckets:
    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def take(self, name: str, rps: float, capacity: float) -> float | None:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._state.get(name, (capacity, now))
            tokens = min(capacity, tokens + (now - then) * rps)
            if tokens >= 1:
                self._state[name] = (tokens - 1, now)
                return None
            self._state[name] = (tokens, now)
            return (1 - tokens) / rps

    async def aclose(self) -> None:
        pass


# KEYS[1] the bucket; ARGV: rate, capacity. Returns {1, 0} when a token was taken, else {0, "seconds to wait"}.
TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or t
tokens = math.min(capacity, tokens + math.max(0, t - ts) * rate)
local taken = tokens >= 1
if taken then tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
if taken then return {1, '0'} end
return {0, tostring((1 - tokens) / rate)}
"""


class RedisBuckets:
    def __init__(self, url: str, prefix: str = "arbiter:ratelimit:") -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._take = self._redis.register_script(TAKE)
        self.prefix = prefix

    async def take(self, name: str, rps: float, capacity: float) -> float | None:
        try:
            taken, wait = await self._take(keys=[self.prefix + name], args=[rps, capacity])
        except Exception as exc:  # Redis down or slow: let the request through, say so
            log.warning("rate limit not checked: redis unavailable", extra={"reason": repr(exc)})
            return None
        return None if int(taken) else float(wait)

    async def aclose(self) -> None:
        await self._redis.aclose()
