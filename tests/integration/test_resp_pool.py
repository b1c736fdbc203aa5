"""The API's lean Redis pool's own behaviour against a real Redis: same replies as redis-py, db selection,
and the Coalescer's shared round trips. Reads through it (values, error replies, an unreachable Redis) are
part of the online store's contract test, `test_online_store.py`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
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


def test_an_idle_connection_redis_closed_is_retried_on_a_fresh_one(
    servers: tuple[object, RedisEndpoint],
) -> None:
    """A pooled connection that Redis closed while it sat idle (a restart, CLIENT KILL) costs no error: the
    request is retried once on a fresh connection."""
    _, endpoint = servers
    admin = redis.Redis.from_url(endpoint.url())

    async def run() -> list[Any]:
        pool = RespPool(endpoint, timeout_s=2.0)
        try:
            (client_id,) = await pool.request(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n", 1)
            assert admin.client_kill_filter(_id=client_id) == 1  # the idle connection is gone
            return await pool.request(b"*1\r\n$4\r\nPING\r\n", 1)
        finally:
            await pool.close()

    try:
        assert asyncio.run(run()) == [b"PONG"]
    finally:
        admin.close()


def test_a_stalled_server_costs_one_timeout_not_two() -> None:
    """A server that accepts connections and never answers (a SIGSTOPped Redis): the request fails with
    TimeoutError after one `timeout_s`, each time (no retry pays it again; the reused-connection case is the
    SIGSTOP fault test, tests/faults/test_redis_faults.py)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    endpoint = RedisEndpoint("127.0.0.1", listener.getsockname()[1])

    async def run() -> list[float]:
        pool = RespPool(endpoint, timeout_s=0.3)
        took: list[float] = []
        try:
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await pool.request(b"*1\r\n$4\r\nPING\r\n", 1)
                took.append(time.monotonic() - started)
        finally:
            await pool.close()
        return took

    try:
        took = asyncio.run(run())
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert all(0.29 <= seconds < 0.55 for seconds in took), took
