"""Coalesce the Redis reads of concurrent requests into one round trip.

Every request that reaches its read in the same event-loop iteration is queued; one callback scheduled
with `call_soon` sends all their pre-packed commands in one write and hands each caller its own slice of
the replies. Under load a worker then pays one write, one wake-up and one parse loop for several requests;
alone, a request goes out on the next iteration, as before. A Redis error reply fails only the request it
belongs to; a connection failure fails every request of that round trip.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis

from core.online.resp_pool import RespPool

__all__ = ["Coalescer"]

_Waiting = tuple[bytes, int, "asyncio.Future[list[Any]]"]


class Coalescer:
    """`request(payload, replies)` with the same contract as RespPool.request, batched per loop iteration."""

    def __init__(self, pool: RespPool, *, max_replies: int = 4_096) -> None:
        self.pool = pool
        self.max_replies = max_replies
        self._pending: list[_Waiting] = []
        self._pending_replies = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0  # for tests and debugging

    async def request(self, payload: bytes, replies: int) -> list[Any]:
        """This caller's replies; error replies raise ResponseError, connection failures propagate."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((payload, replies, future))
        self._pending_replies += replies
        if self._pending_replies >= self.max_replies:
            self._flush()
        return await future

    def _flush(self) -> None:
        batch, self._pending, self._pending_replies = self._pending, [], 0
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        self.round_trips += 1
        try:
            replies = await self.pool.raw_request(
                b"".join(p for p, _, _ in batch), sum(n for _, n, _ in batch)
            )
        except BaseException as exc:  # every caller of this round trip gets the failure
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        position = 0
        for _, count, future in batch:
            mine = replies[position : position + count]
            position += count
            if future.done():  # the caller went away (cancelled)
                continue
            errors = [reply for reply in mine if isinstance(reply, hiredis.ReplyError)]
            if errors:
                future.set_exception(redis.ResponseError(str(errors[0])))
            else:
                future.set_result(mine)
