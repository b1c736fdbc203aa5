"""Moving pre-packed RESP bytes over redis-py's synchronous connections (jobs, the checker, the CLI).

`request` sends one buffer and reads its replies on one pooled connection, under the client's retry policy
(as a redis-py pipeline would); `stream` sends batches back to back, reading batch k's replies while Redis
executes batch k+1's, for bulk writes. Error replies are read to the end (the connection stays in sync) and
the first one is raised. A connection that failed half-way is dropped, never returned to the pool.
The asyncio twin for the API is `core.online.resp_pool` (+ `core.online.coalesce`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import redis
from redis.exceptions import ResponseError

from core.errors import ConfigurationError

__all__ = ["SyncTransport"]


class _Connection(Protocol):
    """The part of redis-py's (untyped) `Connection` used here."""

    retry: Any

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


def _read_all(connection: _Connection, replies: int) -> list[Any]:
    """`replies` replies; an error reply is raised only after all of them were read."""
    out: list[Any] = []
    first_error: ResponseError | None = None
    for _ in range(replies):
        try:
            out.append(connection.read_response())
        except ResponseError as error:
            first_error = first_error or error
            out.append(error)
    if first_error is not None:
        raise first_error
    return out


class SyncTransport:
    """A redis-py client's connection pool used for pre-packed commands (the client must return bytes)."""

    def __init__(self, client: redis.Redis) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigurationError("the online store needs a Redis client with decode_responses=False")
        self.client = client

    def request(self, payload: bytes, replies: int) -> list[Any]:
        """Send `payload` and return its `replies` replies (none for an empty payload)."""
        if not payload:
            return []
        pool = self.client.connection_pool
        connection: _Connection = pool.get_connection()

        def round_trip() -> list[Any]:
            try:
                connection.send_packed_command([payload])
                return _read_all(connection, replies)
            except ResponseError:
                raise  # every reply was read: the connection is in sync
            except BaseException:
                connection.disconnect()  # unread replies must not reach the pool's next user
                raise

        try:
            result: list[Any] = connection.retry.call_with_retry(
                round_trip, lambda _: connection.disconnect()
            )
        finally:
            pool.release(connection)  # type: ignore[arg-type]  # our Protocol is redis-py's Connection
        return result

    def stream(
        self,
        batches: Iterable[tuple[bytes, int, int]],
        done: Callable[[int], None] | None = None,
        replies_to: Callable[[list[Any]], None] | None = None,
    ) -> None:
        """Send each `(payload, replies, rows)` batch; `done(rows)` once Redis acknowledged a batch (after
        `replies_to(replies)`, when given, saw its replies).

        Batch k+1 is produced (and sent) before batch k's replies are read. No retry: on an error the batches
        before the failing one are written, nothing after it is sent, and the error propagates.
        """
        pool = self.client.connection_pool
        connection: _Connection = pool.get_connection()
        try:
            sent: tuple[int, int] | None = None  # (replies, rows) of the batch whose replies are unread
            for payload, replies, rows in batches:
                if sent is not None:
                    self._acknowledged(connection, sent, done, replies_to)
                connection.send_packed_command([payload])
                sent = (replies, rows)
            if sent is not None:
                self._acknowledged(connection, sent, done, replies_to)
        except BaseException:
            connection.disconnect()  # unread replies must not reach the pool's next user
            raise
        finally:
            pool.release(connection)  # type: ignore[arg-type]  # our Protocol is redis-py's Connection

    @staticmethod
    def _acknowledged(
        connection: _Connection,
        sent: tuple[int, int],
        done: Callable[[int], None] | None,
        replies_to: Callable[[list[Any]], None] | None,
    ) -> None:
        replies = _read_all(connection, sent[0])
        if replies_to is not None:
            replies_to(replies)
        if done is not None:
            done(sent[1])

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
