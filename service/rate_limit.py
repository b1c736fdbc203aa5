"""A per-key rate limit shared by every worker and replica: fixed windows counted in Redis.

One Lua script per request (`INCR`, `PEXPIRE` on the first hit, `PTTL`) counts the caller's requests in the
current window; the window starts at the caller's first request, so replicas need no common clock. Over
the limit, the caller waits the window's remaining time (`Retry-After`, whole seconds, at least 1). Keys
are `tandem:ratelimit:<feast project>:<bucket>`, the bucket a key's hash prefix or a client address.

The limiter fails open: when Redis does not answer (down, stalled, garbage), the request is served and the
limiter is skipped for a short back-off, so an outage costs one timeout per back-off, not one per request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from litestar import Litestar
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.settings import Settings
from core.stores.resolve import resolve_stores

__all__ = [
    "BUCKET_PREFIX",
    "RateLimiter",
    "RateLimits",
    "RedisCounter",
    "WindowCounter",
    "rate_limit_lifespan",
]

logger = logging.getLogger(__name__)

BUCKET_PREFIX = "tandem:ratelimit:"
BACKOFF_S = 2.0
"""How long the limiter stays out of the way after Redis failed to answer."""

_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class WindowCounter(Protocol):
    """Counts hits of a bucket in its current window."""

    async def hit(self, bucket: str, *, window_ms: int) -> tuple[int, int]:
        """This hit's number in the window, and the window's remaining milliseconds."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class RedisCounter:
    """`WindowCounter` in Redis: one script call (EVALSHA, EVAL once after a restart) per hit."""

    def __init__(self, url: str, *, timeout_s: float, prefix: str = BUCKET_PREFIX) -> None:
        pool = BlockingConnectionPool.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # no retries: one timeout, then the limiter backs off
            max_connections=32,  # a burst waits for a connection (up to the timeout), never opens hundreds
            timeout=timeout_s,
        )
        self.client = Redis(connection_pool=pool)
        self.script = self.client.register_script(_SCRIPT)
        self.prefix = prefix

    async def hit(self, bucket: str, *, window_ms: int) -> tuple[int, int]:
        """One INCR of the bucket's key, its expiry set on the window's first hit."""
        count, ttl = await self.script(keys=[self.prefix + bucket], args=[window_ms])
        return int(count), int(ttl)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose(close_connection_pool=True)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests allowed per window: per key, and per client address for requests without a key."""

    per_key: int
    anonymous: int
    window_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        """Requests per second times the window (at least 1 when a rate is set; 0: no limit)."""
        anonymous = settings.rate_limit_anonymous_per_s
        rate_anonymous = settings.rate_limit_per_s if anonymous is None else anonymous
        window = settings.rate_limit_window_s

        def per_window(rate: float) -> int:
            return 0 if rate <= 0 else max(1, round(rate * window))

        return cls(per_window(settings.rate_limit_per_s), per_window(rate_anonymous), window)

    @property
    def enabled(self) -> bool:
        """True when any limit is set."""
        return self.per_key > 0 or self.anonymous > 0


class RateLimiter:
    """Decides whether a bucket is over its limit; fails open with a back-off when the counter fails."""

    def __init__(
        self,
        counter: WindowCounter,
        limits: RateLimits,
        *,
        backoff_s: float = BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counter, self.limits, self.backoff_s, self.clock = counter, limits, backoff_s, clock
        self.skip_until = 0.0

    async def retry_after(self, bucket: str, *, keyed: bool) -> int | None:
        """Seconds to wait when `bucket` is over its limit; None to serve the request."""
        limit = self.limits.per_key if keyed else self.limits.anonymous
        if limit <= 0 or self.clock() < self.skip_until:
            return None
        try:
            count, ttl_ms = await self.counter.hit(bucket, window_ms=max(1, int(self.limits.window_s * 1000)))
        except Exception as exc:  # noqa: BLE001 - fail open: no limiter fault may fail a request
            self.skip_until = self.clock() + self.backoff_s
            logger.warning("rate limiter skipped for %.1f s: Redis did not answer (%s)", self.backoff_s, exc)
            return None
        if count <= limit:
            return None
        return max(1, math.ceil(ttl_ms / 1000))

    async def close(self) -> None:
        """Close the counter's connections."""
        await self.counter.close()


def _redis_url(settings: Settings) -> str:
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return resolve_stores(settings).redis.url()


@asynccontextmanager
async def rate_limit_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open the limiter's Redis client when a limit is configured (`app.state.rate_limiter`), close it after."""
    settings: Settings = app.state.settings
    limits = RateLimits.from_settings(settings)
    limiter = None
    if limits.enabled:
        counter = RedisCounter(
            _redis_url(settings),
            timeout_s=settings.redis_timeout_s,
            prefix=f"{BUCKET_PREFIX}{settings.feast_project}:",  # deployments sharing a Redis db count apart
        )
        limiter = RateLimiter(counter, limits)
    app.state.rate_limiter = limiter
    try:
        yield
    finally:
        app.state.rate_limiter = None
        if limiter is not None:
            await limiter.close()
