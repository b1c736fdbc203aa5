"""The online store for the API: the same operations and bytes as `core.online.store.OnlineStore`, over an
asyncio transport (`core.online.resp_pool`, `core.online.coalesce`, `core.online.breaker`)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import redis

from core.features.keys import EntityId
from core.online.failures import decoded_rows, mapped, no_script, redis_failures
from core.online.newer_wins import pack_newer_writes, written_count
from core.online.rows import FeatureRows, OnlineRow
from core.online.wire import ReadLayout, command

__all__ = ["AsyncOnlineStore", "AsyncTransport"]


class AsyncTransport(Protocol):
    """Pre-packed RESP out, replies in; error replies raise ResponseError (RespPool, Coalescer)."""

    def request(self, payload: bytes, replies: int) -> Awaitable[list[Any]]: ...


class AsyncOnlineStore:
    """The online store for the API, over an asyncio transport (see `core.online.store`)."""

    def __init__(self, transport: AsyncTransport, *, project: str) -> None:
        self.transport = transport
        self.project = project

    async def read(self, layout: ReadLayout, entity_ids: Sequence[EntityId]) -> list[OnlineRow]:
        """Rows for `entity_ids`, in order, from one round trip (none for no ids)."""
        payload = layout.request(entity_ids)
        if not payload:
            return []
        with mapped():
            replies = await self.transport.request(payload, len(entity_ids))
        return decoded_rows(layout, entity_ids, replies)

    async def write_newer(self, rows: FeatureRows) -> int:
        """Write the rows whose event time is newer than the online one; returns how many were written."""
        if len(rows) == 0:
            return 0
        with mapped():
            try:
                replies = await self.transport.request(pack_newer_writes(self.project, rows), len(rows))
            except redis.ResponseError as exc:
                if not no_script(exc):
                    raise
                payload = pack_newer_writes(self.project, rows, by_body=True)
                replies = await self.transport.request(payload, len(rows))
        return written_count(replies)

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            reply = await self.transport.request(command(b"PING"), 1)
        except redis_failures:
            return False
        return reply == [b"PONG"] or reply == ["PONG"]
