"""A circuit breaker in front of the API's Redis transport: after a failure, skip Redis for a short back-off.

Without it every request pays the full timeout (twice, with the retry) while Redis is down. Closed: requests
go through. A failure (connection refused, timeout, protocol garbage) opens it for `backoff_s`: requests fail
at once with ConnectionError (the prediction service then answers from PostgreSQL, degraded). After the
back-off one request at a time probes Redis (half-open); a success closes the breaker, a failure opens it
again. Error replies (WRONGTYPE...) are Redis answering: they never open it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import hiredis
import redis

__all__ = ["BreakerTransport"]

_FAILURES = (
    ConnectionError,
    OSError,
    TimeoutError,
    redis.ConnectionError,
    redis.TimeoutError,
    hiredis.ProtocolError,
)


class _Transport(Protocol):
    def request(self, payload: bytes, replies: int) -> Awaitable[list[Any]]: ...


class BreakerTransport:
    """Wraps an asyncio transport (`request(payload, replies)`); see the module docstring."""

    def __init__(
        self, inner: _Transport, *, backoff_s: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.backoff_s = backoff_s
        self.clock = clock
        self.open_until = 0.0  # monotonic time before which requests skip Redis
        self.probing = False
        self.opened = 0  # how many times it opened (metrics, tests)

    @property
    def is_open(self) -> bool:
        """Whether requests skip Redis right now."""
        return self.clock() < self.open_until or self.probing

    async def request(self, payload: bytes, replies: int) -> list[Any]:
        """The inner transport's replies; ConnectionError at once while the breaker is open."""
        now = self.clock()
        if now < self.open_until:
            raise ConnectionError(f"Redis skipped for {self.open_until - now:.2f} s more after a failure")
        probe = self.open_until > 0.0
        if probe:
            if self.probing:  # another request is probing: this one does not wait for it
                raise ConnectionError("Redis is being probed after a failure")
            self.probing = True
        try:
            result = await self.inner.request(payload, replies)
        except _FAILURES:
            self.open_until = self.clock() + self.backoff_s
            self.opened += 1
            raise
        finally:
            if probe:
                self.probing = False
        self.open_until = 0.0
        return result

    async def close(self) -> None:
        """Nothing of its own to close (the inner transport is closed by its owner)."""
