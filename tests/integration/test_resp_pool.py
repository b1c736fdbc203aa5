"""The API's lean Redis pool's own behaviour against a real Redis: same replies as redis-py, db selection,
and the Coalescer's shared round trips. Reads through it (values, error replies, an unreachable Redis) are
part of the online store's contract test, `test_online_store.py`."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis

from core.endpoints import RedisEndpoint
from core.online.coalesce import Coalescer
from core.online.resp_pool import RespPool


def _hmget(key: bytes, *fields: bytes) -> bytes:
    parts = [b"HMGET", key, *fields]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def test_replies_match_redis_py_and_db_is_selected(servers: tuple[object, RedisEndpoint]) -> None:
    """Pipelined HMGETs in db 3 come back in order, byte for byte what redis-py reads."""
    _, base = servers
    endpoint = RedisEndpoint(base.host, base.port, 3, base.username, base.password)
    client = redis.Redis.from_url(endpoint.url())
    names = [f"tandem-test:{uuid.uuid4().hex}" for _ in range(3)]
    keys = [name.encode() for name in names]
    try:
        client.hset(names[0], mapping={"a": b"\x00\x01", "b": "x"})
        client.hset(names[1], mapping={"a": "y"})
        payload = b"".join(_hmget(key, b"a", b"b") for key in keys)

        async def run() -> list[object]:
            pool = RespPool(endpoint, timeout_s=1.0)
            try:
                first = await pool.request(payload, len(keys))
                again = await pool.request(payload, len(keys))  # a reused connection
                assert again == first
                return first
            finally:
                await pool.close()

        replies = asyncio.run(run())
        expected = [client.hmget(name, ["a", "b"]) for name in names]
        assert replies == expected
        assert replies[2] == [None, None]
    finally:
        client.delete(*names)
        client.close()


def test_concurrent_requests_share_round_trips_and_get_their_own_replies(
    servers: tuple[object, RedisEndpoint],
) -> None:
    """50 concurrent reads go out in fewer round trips; each caller gets exactly its replies, and a caller
    whose command hits an error reply fails alone."""
    _, endpoint = servers
    client = redis.Redis.from_url(endpoint.url())
    names = [f"tandem-test:{uuid.uuid4().hex}" for _ in range(50)]
    for index, name in enumerate(names):
        client.hset(name, mapping={"a": str(index)})
    wrong = f"tandem-test:{uuid.uuid4().hex}"
    client.set(wrong, "plain")

    async def run() -> tuple[list[list[Any] | BaseException], int]:
        coalescer = Coalescer(RespPool(endpoint, timeout_s=2.0))
        try:
            calls = [coalescer.request(_hmget(name.encode(), b"a"), 1) for name in names]
            calls.append(coalescer.request(_hmget(wrong.encode(), b"a"), 1))
            results = await asyncio.gather(*calls, return_exceptions=True)
            return results, coalescer.round_trips
        finally:
            await coalescer.pool.close()

    try:
        results, round_trips = asyncio.run(run())
    finally:
        client.delete(*names, wrong)
        client.close()
    assert results[:50] == [[[str(index).encode()]] for index in range(50)]
    assert isinstance(results[50], redis.ResponseError)
    assert round_trips < 51


def test_a_reply_beyond_the_cap_fails_the_request_not_the_worker(
    servers: tuple[object, RedisEndpoint],
) -> None:
    """A 2 MB value read with a 1 MB cap: ConnectionError before it is buffered whole; the pool still works."""
    _, endpoint = servers
    client = redis.Redis.from_url(endpoint.url())
    name = f"tandem-test:{uuid.uuid4().hex}"
    try:
        client.hset(name, mapping={"a": b"x" * (2 << 20)})

        async def run() -> list[object]:
            pool = RespPool(endpoint, timeout_s=2.0, max_reply_bytes=1 << 20)
            try:
                with pytest.raises(ConnectionError, match="more than 1,048,576 bytes"):
                    await pool.request(_hmget(name.encode(), b"a"), 1)
                return await pool.request(_hmget(name.encode(), b"missing"), 1)
            finally:
                await pool.close()

        assert asyncio.run(run()) == [[None]]
    finally:
        client.delete(name)
        client.close()
