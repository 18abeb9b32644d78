"""Rate limits with the `limits` library: a moving window per caller, in memory for one replica or in Redis when
replicas share the limits. A limit of `rps` with a burst of `capacity` is `capacity` requests per
`capacity / rps` seconds (at least one second, the library's finest window).

Memory windows expire on their own once idle, so callers that come and go leave nothing behind. If Redis cannot be
reached the request is let through and the failure logged: a rate limiter must not take scoring down.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger("arbiter.access")


def window(rps: float, capacity: float) -> RateLimitItem:
    return RateLimitItemPerSecond(max(1, math.floor(capacity)), max(1, round(capacity / rps)), namespace="arbiter")


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        self.storage: Storage = (
            RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix="arbiter:ratelimit",
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            )
            if redis_url
            else MemoryStorage()
        )
        self.shared = redis_url is not None
        self._limiter = MovingWindowRateLimiter(self.storage)

    async def take(self, bucket: str, rps: float, capacity: float) -> float | None:
        """None when the request may go, else the seconds until the caller's window has room again."""
        item = window(rps, capacity)
        try:
            if await self._limiter.hit(item, bucket):
                return None
            stats = await self._limiter.get_window_stats(item, bucket)
        except Exception as exc:  # Redis down or slow: let the request through, say so
            if not self.shared:
                raise
            log.warning("rate limit not checked: redis unavailable", extra={"reason": repr(exc)})
            return None
        return max(0.0, stats.reset_time - time.time())
