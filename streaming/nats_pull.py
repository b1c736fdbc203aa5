"""Pulling micro-batches from a JetStream durable consumer without a task per message.

nats-py's `PullSubscription.fetch` waits for each message with its own `asyncio.wait_for` (a task per
message), which costs more than writing the message to both stores. Here one inbox subscription collects
what the server delivers, and a fetch is one pull request (JetStream's `CONSUMER.MSG.NEXT` API) for what
the batch lacks, lingering at most `timeout`: the fetch returns once the first message arrived and no
other followed within `gap_s` (the server sends what it has back to back), or the batch is full, or
`timeout` passed with nothing.

A request may deliver after its fetch returned (it lingers until it expires): those messages wait in the
inbox and come out first next time, so every delivered message is returned once, to be acknowledged by
the caller. Status messages (an expired request's 408, a 409) only end a wait.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["Puller"]


class Puller:
    """Fetches from the durable consumer `durable` of `stream` through one inbox."""

    def __init__(self, client: Client, *, stream: str, durable: str, gap_s: float = 0.005) -> None:
        self.client = client
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.inbox = client.new_inbox()
        self.gap_s = gap_s
        self.ready: deque[Msg] = deque()  # delivered, not returned yet
        self.arrived = asyncio.Event()  # a message or a status came in
        self._subscription: Any = None

    async def start(self) -> None:
        """Subscribe to the inbox."""
        self._subscription = await self.client.subscribe(self.inbox, cb=self._on_message)

    async def _on_message(self, message: Msg) -> None:
        if not (message.headers and message.headers.get("Status")):
            self.ready.append(message)
        self.arrived.set()

    async def fetch(self, batch: int, *, timeout: float) -> list[Msg]:
        """Up to `batch` messages: what the server has now, else the first to arrive within `timeout`
        and those right behind it; [] when none came."""
        missing = batch - len(self.ready)
        if missing > 0:
            request = {"batch": missing, "expires": int(timeout * 1_000_000_000)}
            await self.client.publish(self.subject, json.dumps(request).encode(), reply=self.inbox)
            await self._gather(batch, timeout)
        return [self.ready.popleft() for _ in range(min(batch, len(self.ready)))]

    async def _gather(self, batch: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.ready) < batch:
            wait = self.gap_s if self.ready else deadline - loop.time()
            if wait <= 0:
                return
            before = len(self.ready)
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), wait)
            except TimeoutError:
                return  # nothing within the gap (or the timeout)
            if len(self.ready) == before and self.ready:
                return  # a status: a request ended, and we hold messages already

    async def stop(self) -> None:
        """Unsubscribe; the caller naks what is left in `ready` (redelivered at once, to anyone)."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
