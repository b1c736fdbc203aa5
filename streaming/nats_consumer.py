"""NATS JetStream: one durable pull consumer shared by every `tandem stream` process (queue semantics).

Producers publish a row as JSON on `tandem.events.<push_source>`; the stream `TANDEM_EVENTS` (a setting)
keeps subjects `tandem.events.>`, and `<stream>_DEAD` keeps the dead letters on `tandem.dead.<push_source>`
(payload: the event as sent; headers `Tandem-Reason`, `Tandem-Kind`, `Tandem-Subject`, `Tandem-Sequence`).
Both streams and the durable consumer are created when missing. Each process fetches micro-batches from
the durable consumer, writes them (in a worker thread, so the client keeps answering the server), and
acknowledges each message only after both stores took the batch. A message not acknowledged within the
consumer's ack wait (`claim_idle_ms`: a consumer died, or a batch failed) is delivered again, to any process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from core.errors import StoreUnavailableError
from streaming.events import nats_event
from streaming.metrics import LAG, PENDING, record_batch
from streaming.nats_pull import Puller
from streaming.writer import BatchOutcome, StreamWriter

__all__ = ["NatsOptions", "NatsStreamConsumer", "ensure_consumer", "ensure_streams"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Where and how a consumer reads (the `stream_*` settings)."""

    url: str
    stream: str = "TANDEM_EVENTS"
    subjects: str = (
        "tandem"  # events on `<subjects>.events.<push_source>`, dead letters on `<subjects>.dead.*`
    )
    durable: str = "tandem"
    batch: int = 5000
    block_ms: int = 500
    claim_idle_ms: int = 30_000
    retry_s: float = 1.0
    stats_every_s: float = 1.0

    @property
    def events_prefix(self) -> str:
        """Subjects of events: this, then the push source."""
        return f"{self.subjects}.events."

    @property
    def dead_prefix(self) -> str:
        """Subjects of dead letters: this, then the push source."""
        return f"{self.subjects}.dead."

    @property
    def dead_stream(self) -> str:
        """The stream keeping `tandem.dead.>`."""
        return f"{self.stream}_DEAD"


async def ensure_streams(js: JetStreamContext, options: NatsOptions) -> None:
    """Create the events stream and the dead-letter stream unless they exist."""
    for name, subject in (
        (options.stream, f"{options.events_prefix}>"),
        (options.dead_stream, f"{options.dead_prefix}>"),
    ):
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=name, subjects=[subject])


async def ensure_consumer(js: JetStreamContext, options: NatsOptions) -> None:
    """Create the durable pull consumer every process shares unless it exists."""
    try:
        await js.consumer_info(options.stream, options.durable)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(
            options.stream,
            ConsumerConfig(
                durable_name=options.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=options.claim_idle_ms / 1000,
                max_ack_pending=-1,
                filter_subject=f"{options.events_prefix}>",
            ),
        )


def _header(text: str) -> str:
    return " ".join(text.split())[:1000]


class NatsStreamConsumer:
    """One process on the shared durable consumer, writing through `writer`."""

    broker = "nats"

    def __init__(self, writer: StreamWriter, options: NatsOptions) -> None:
        self.writer = writer
        self.options = options

    def run(self, stop: threading.Event) -> None:
        """Fetch, write and acknowledge micro-batches until `stop` is set; the batch in hand is finished."""
        asyncio.run(self._run(stop))

    async def _run(self, stop: threading.Event) -> None:
        options = self.options
        client = await nats.connect(options.url, name="tandem-stream", max_reconnect_attempts=-1)
        try:
            js = client.jetstream()
            await ensure_streams(js, options)
            await ensure_consumer(js, options)
            puller = Puller(client, stream=options.stream, durable=options.durable)
            await puller.start()
            next_stats = 0.0
            while not stop.is_set():
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + options.stats_every_s
                    await self._stats(js)
                messages = await puller.fetch(options.batch, timeout=options.block_ms / 1000)
                if not messages:
                    continue
                try:
                    await self.handle(js, messages)
                except StoreUnavailableError as exc:
                    # Not acknowledged: delivered again after `retry_s`, to this process or another.
                    logger.warning("stream: batch not acknowledged, retried later: %s", exc)
                    for message in messages:
                        await message.nak(delay=options.retry_s)
                    await asyncio.to_thread(stop.wait, options.retry_s)
                except nats.errors.Error as exc:
                    # Unacknowledged messages are delivered again after the consumer's ack wait.
                    logger.warning("stream: NATS: %s; retrying in %.1f s", exc, options.retry_s)
                    await asyncio.to_thread(stop.wait, options.retry_s)
            await puller.stop()
            for message in puller.ready:  # delivered after the last fetch: to another process at once
                await message.nak()
            await client.flush()
        finally:
            await client.close()

    async def handle(self, js: JetStreamContext, messages: Sequence[Msg]) -> BatchOutcome:
        """Write the messages, publish their dead letters, acknowledge them all."""
        started = time.perf_counter()
        prefix = self.options.events_prefix
        events = [
            nats_event(str(message.metadata.sequence.stream), message.subject, message.data, prefix=prefix)
            for message in messages
        ]
        outcome = await asyncio.to_thread(self.writer.write, events)
        subjects = {
            event.message_id: message.subject for event, message in zip(events, messages, strict=True)
        }
        for letter in outcome.dead:
            event = letter.event
            token = event.push_source or "_"
            headers = {
                "Tandem-Reason": _header(letter.reason),
                "Tandem-Kind": letter.kind,
                "Tandem-Sequence": event.message_id,
            }
            headers["Tandem-Subject"] = subjects[event.message_id]
            await js.publish(f"{self.options.dead_prefix}{token}", event.raw, headers=headers)
        for message in messages:
            await message.ack()
        record_batch(self.broker, outcome, time.perf_counter() - started)
        return outcome

    async def _stats(self, js: JetStreamContext) -> None:
        try:
            info = await js.consumer_info(self.options.stream, self.options.durable)
        except Exception as exc:  # noqa: BLE001 - metrics only: a failed look is tried again next time
            logger.debug("stream: consumer info failed: %s", exc)
            return
        LAG.labels(self.broker).set(float(info.num_pending or 0))
        PENDING.labels(self.broker).set(float(info.num_ack_pending or 0))
