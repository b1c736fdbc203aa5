"""Both brokers behind one test interface, for the stream ingestion contract test (test_stream_ingest.py).

A harness sends events as a producer would, builds consumers of `tandem stream` on its own stream (a
unique Redis stream, or a unique JetStream stream and subject root), reads the dead letters and the
group's pending count, and plays a consumer that dies holding events (`abandon`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import nats
import redis
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from core.endpoints import RedisEndpoint
from streaming.nats_consumer import NatsOptions, NatsStreamConsumer, ensure_streams
from streaming.redis_consumer import RedisStreamConsumer, StreamOptions
from streaming.writer import StreamWriter

__all__ = ["Broker", "DeadLetterSeen", "NatsBroker", "RedisBroker", "Send"]

T = TypeVar("T")

Send = tuple[str, dict[str, Any] | bytes]
"""(push source, row) for a good event; bytes: sent as they are (the Redis `event` field, the NATS payload)."""


@dataclass(frozen=True)
class DeadLetterSeen:
    """A dead letter as read back from the broker."""

    kind: str
    reason: str
    raw: bytes
    push_source: str


class Consumer(Protocol):
    """A broker's consumer (RedisStreamConsumer, NatsStreamConsumer)."""

    def run(self, stop: Any) -> None: ...


class Broker(Protocol):
    """What the contract test needs of a broker."""

    name: str
    stream: str

    def send(self, items: list[Send]) -> None: ...
    def consumer(self, writer: StreamWriter, name: str, *, batch: int = 500) -> Consumer: ...
    def dead_letters(self) -> list[DeadLetterSeen]: ...
    def pending(self) -> int: ...
    def abandon(self, count: int) -> int: ...
    def close(self) -> None: ...


class RedisBroker:
    """A Redis stream of its own on the test Redis."""

    name = "redis"

    def __init__(self, endpoint: RedisEndpoint, *, claim_idle_ms: int) -> None:
        self.client = redis.Redis(host=endpoint.host, port=endpoint.port, db=endpoint.db)
        self.stream = f"test:events:{uuid.uuid4().hex[:10]}"
        self.dead = f"{self.stream}:dead"
        self.group = "tandem"
        self.claim_idle_ms = claim_idle_ms
        self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)

    def send(self, items: list[Send]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for source, row in items:
            event = row if isinstance(row, bytes) else json.dumps({"push_source": source, "row": row})
            pipe.xadd(self.stream, {"event": event})
        pipe.execute()

    def consumer(self, writer: StreamWriter, name: str, *, batch: int = 500) -> RedisStreamConsumer:
        options = StreamOptions(
            stream=self.stream,
            group=self.group,
            consumer=name,
            dead_letters=self.dead,
            batch=batch,
            block_ms=50,
            claim_idle_ms=self.claim_idle_ms,
            retry_s=0.1,
        )
        return RedisStreamConsumer(redis.Redis(connection_pool=self.client.connection_pool), writer, options)

    def dead_letters(self) -> list[DeadLetterSeen]:
        entries: Any = self.client.xrange(self.dead)
        return [
            DeadLetterSeen(
                kind=fields[b"kind"].decode(),
                reason=fields[b"reason"].decode(),
                raw=fields[b"event"],
                push_source=fields[b"push_source"].decode(),
            )
            for _, fields in entries
        ]

    def pending(self) -> int:
        summary: Any = self.client.xpending(self.stream, self.group)
        return int(summary["pending"])

    def abandon(self, count: int) -> int:
        """Read `count` entries as a consumer that then dies without acknowledging them."""
        reply: Any = self.client.xreadgroup(self.group, "dead-consumer", {self.stream: ">"}, count=count)
        return len(reply[0][1]) if reply else 0

    def close(self) -> None:
        self.client.delete(self.stream, self.dead)
        self.client.close()


def _run(work: Callable[[Any], Awaitable[T]], url: str) -> T:
    async def main() -> T:
        client = await nats.connect(url)
        try:
            return await work(client)
        finally:
            await client.close()

    return asyncio.run(main())


class NatsBroker:
    """A JetStream stream and subject root of its own on the test NATS server."""

    name = "nats"

    def __init__(self, url: str, *, claim_idle_ms: int) -> None:
        tag = uuid.uuid4().hex[:10]
        self.url = url
        self.options = NatsOptions(
            url=url,
            stream=f"T_{tag}",
            subjects=f"t{tag}",
            durable="tandem",
            block_ms=50,
            claim_idle_ms=claim_idle_ms,
            retry_s=0.1,
        )
        self.stream = self.options.stream

        async def create(client: Any) -> None:
            js = client.jetstream()
            await ensure_streams(js, self.options)
            await js.add_consumer(self.stream, self._consumer_config())

        _run(create, url)

    def _consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.options.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.options.claim_idle_ms / 1000,
            max_ack_pending=-1,
            filter_subject=f"{self.options.events_prefix}>",
        )

    def send(self, items: list[Send]) -> None:
        async def publish(client: Any) -> None:
            js = client.jetstream()
            for source, row in items:
                payload = row if isinstance(row, bytes) else json.dumps(row).encode()
                await js.publish(f"{self.options.events_prefix}{source}", payload)

        _run(publish, self.url)

    def consumer(self, writer: StreamWriter, name: str, *, batch: int = 500) -> NatsStreamConsumer:
        return NatsStreamConsumer(writer, replace(self.options, batch=batch))

    def dead_letters(self) -> list[DeadLetterSeen]:
        async def read(client: Any) -> list[DeadLetterSeen]:
            js = client.jetstream()
            info = await js.stream_info(self.options.dead_stream)
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                if info.state.messages == 0:
                    break
                message = await js.get_msg(self.options.dead_stream, seq)
                headers = message.headers or {}
                found.append(
                    DeadLetterSeen(
                        kind=headers["Tandem-Kind"],
                        reason=headers["Tandem-Reason"],
                        raw=message.data or b"",
                        push_source=(message.subject or "").removeprefix(self.options.dead_prefix),
                    )
                )
            return found

        return _run(read, self.url)

    def pending(self) -> int:
        async def read(client: Any) -> int:
            info = await client.jetstream().consumer_info(self.stream, self.options.durable)
            return int(info.num_ack_pending or 0) + int(info.num_pending or 0)

        return _run(read, self.url)

    def abandon(self, count: int) -> int:
        """Fetch `count` messages on the durable consumer as a process that then dies without acking."""

        async def grab(client: Any) -> int:
            js = client.jetstream()
            subscription = await js.pull_subscribe_bind(self.options.durable, self.stream)
            messages = await subscription.fetch(count, timeout=2)
            return len(messages)

        return _run(grab, self.url)

    def close(self) -> None:
        async def delete(client: Any) -> None:
            js = client.jetstream()
            await js.delete_stream(self.stream)
            await js.delete_stream(self.options.dead_stream)

        _run(delete, self.url)
