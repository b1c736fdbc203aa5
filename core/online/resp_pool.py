"""A lean asyncio Redis connection pool for the API's hot read: pre-packed request in, parsed replies out.

The prediction API sends one pre-packed buffer of k HMGETs and reads k replies. redis-py's asyncio client
spends ~80 µs per round trip around that (pool lock, retry wrapper, per-reply timeouts); this pool keeps
idle connections in a deque, parses with hiredis, bounds the whole request with one timeout, and retries
an idle connection that turned out dead on a fresh one, within that timeout. Everything else (pings, pushes, admin) still uses redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from typing import Any

import hiredis
import redis

from core.endpoints import RedisEndpoint

__all__ = ["RespPool"]


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(part), part) for part in parts)


class _Connection:
    __slots__ = ("max_reply_bytes", "parser", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_reply_bytes: int
    ) -> None:
        self.reader, self.writer = reader, writer
        self.parser = hiredis.Reader()
        self.max_reply_bytes = max_reply_bytes

    async def round_trip(self, payload: bytes, replies: int) -> list[Any]:
        self.writer.write(payload)
        out: list[Any] = []
        received = 0
        while len(out) < replies:
            reply = self.parser.gets()
            if reply is False:
                data = await self.reader.read(65_536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                received += len(data)
                if (
                    received > self.max_reply_bytes
                ):  # a reply no request of ours can need: never buffer it all
                    raise ConnectionError(
                        f"Redis sent more than {self.max_reply_bytes:,} bytes for one request"
                    )
                self.parser.feed(data)
                continue
            out.append(reply)
        return out

    def close(self) -> None:
        self.writer.close()


class RespPool:
    """Connections to one Redis db; `request()` is safe to call from many tasks at once."""

    def __init__(
        self,
        endpoint: RedisEndpoint,
        *,
        timeout_s: float,
        max_idle: int = 16,
        max_reply_bytes: int = 64 << 20,
    ) -> None:
        self.endpoint = endpoint
        self.max_reply_bytes = max_reply_bytes
        # rediss://: TLS verified against the endpoint's CA file (else the system's); AUTH never in clear
        self._tls = ssl.create_default_context(cafile=endpoint.ca_file or None) if endpoint.tls else None
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._idle: collections.deque[_Connection] = collections.deque()

    async def _connect(self) -> _Connection:
        endpoint = self.endpoint
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port, ssl=self._tls)
        connection = _Connection(reader, writer, max_reply_bytes=self.max_reply_bytes)
        setup: list[bytes] = []
        if self.endpoint.password:
            auth = [self.endpoint.username.encode()] if self.endpoint.username else []
            setup.append(_command(b"AUTH", *auth, self.endpoint.password.encode()))
        if self.endpoint.db:
            setup.append(_command(b"SELECT", str(self.endpoint.db).encode()))
        if setup:
            for reply in await connection.round_trip(b"".join(setup), len(setup)):
                if isinstance(reply, hiredis.ReplyError):
                    connection.close()
                    raise redis.AuthenticationError(str(reply))
        return connection

    async def _once(self, payload: bytes, replies: int) -> list[Any]:
        connection = self._idle.pop() if self._idle else await self._connect()
        try:
            result = await connection.round_trip(payload, replies)
        except BaseException:
            connection.close()  # a half-read connection must never be reused
            raise
        if len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return result

    async def request(self, payload: bytes, replies: int) -> list[Any]:
        """Send `payload` (RESP commands) and return its `replies` replies; error replies raise ResponseError.

        Raises TimeoutError past `timeout_s` (the whole request), ConnectionError/OSError when Redis does not
        answer (an idle connection that failed is retried on a fresh one first).
        """
        result = await self.raw_request(payload, replies)
        errors: Sequence[Any] = [reply for reply in result if isinstance(reply, hiredis.ReplyError)]
        if errors:
            raise redis.ResponseError(str(errors[0]))
        return result

    async def raw_request(self, payload: bytes, replies: int) -> list[Any]:
        """As `request`, but error replies come back as hiredis.ReplyError items instead of raising.

        One timeout bounds the whole request, retry included: a stalled Redis costs `timeout_s`, never two.
        Only a connection taken from the idle deque is retried (on a fresh one), and only when it failed
        without timing out: the usual case is a connection Redis closed while it sat idle (a restart).
        """
        async with asyncio.timeout(self.timeout_s):
            while True:
                reused = bool(self._idle)
                try:
                    return await self._once(payload, replies)
                except TimeoutError:
                    raise  # a socket-level timeout: Redis is slow, a second try would wait again
                except (ConnectionError, OSError):
                    self.clear()
                    if not reused:
                        raise  # a fresh connection failed: Redis is down, a retry would fail the same way

    def clear(self) -> None:
        """Close every idle connection (after an error, or at shutdown)."""
        while self._idle:
            self._idle.pop().close()

    async def close(self) -> None:
        """Close the pool."""
        self.clear()
