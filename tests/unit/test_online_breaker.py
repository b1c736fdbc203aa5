"""The Redis circuit breaker: open after a failure, fail fast for the back-off, one probe, then closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from core.online.breaker import BreakerTransport


class _Inner:
    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.error: BaseException = ConnectionError("refused")

    async def request(self, payload: bytes, replies: int) -> list[Any]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.down:
            raise self.error
        return [b"PONG"] * replies


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_opens_it_for_the_back_off_then_one_probe_closes_it() -> None:
    inner, clock = _Inner(), _Clock()
    breaker = BreakerTransport(inner, backoff_s=1.0, clock=clock)

    async def run() -> None:
        inner.down = True
        with pytest.raises(ConnectionError):
            await breaker.request(b"x", 1)
        assert breaker.is_open
        assert inner.calls == 1
        with pytest.raises(ConnectionError, match="skipped"):
            await breaker.request(b"x", 1)
        assert inner.calls == 1  # skipped: Redis not asked while open
        clock.now += 1.01
        with pytest.raises(ConnectionError):  # the probe fails: open again
            await breaker.request(b"x", 1)
        assert inner.calls == 2
        assert breaker.opened == 2
        inner.down = False
        clock.now += 1.01
        assert await breaker.request(b"x", 2) == [b"PONG", b"PONG"]
        assert not breaker.is_open
        assert await breaker.request(b"x", 1) == [b"PONG"]

    asyncio.run(run())


def test_error_replies_never_open_it() -> None:
    inner = _Inner()
    breaker = BreakerTransport(inner, backoff_s=1.0, clock=_Clock())
    inner.down, inner.error = True, redis.ResponseError("WRONGTYPE")

    async def run() -> None:
        with pytest.raises(redis.ResponseError):
            await breaker.request(b"x", 1)
        assert not breaker.is_open

    asyncio.run(run())


def test_only_one_request_probes_at_a_time() -> None:
    inner, clock = _Inner(), _Clock()
    breaker = BreakerTransport(inner, backoff_s=1.0, clock=clock)

    async def run() -> None:
        inner.down = True
        with pytest.raises(ConnectionError):
            await breaker.request(b"x", 1)
        clock.now += 2
        inner.down = False
        results = await asyncio.gather(
            breaker.request(b"x", 1), breaker.request(b"x", 1), return_exceptions=True
        )
        assert sum(isinstance(r, ConnectionError) for r in results) == 1
        assert inner.calls == 2

    asyncio.run(run())
