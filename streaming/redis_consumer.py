"""Redis Streams: a consumer group read in micro-batches, acknowledged only after both stores took them.

Each `tandem stream` process is one consumer of the group (`XREADGROUP ... COUNT n BLOCK ms`): the group
hands each entry to one consumer. An entry read but not acknowledged stays in the group's pending list:
after a failed batch this consumer reads its own pending entries again first, and entries a dead consumer
left behind are taken over once idle for `claim_idle_ms` (`XAUTOCLAIM`), so every entry is written at
least once. Dead letters go to their own stream (fields `event`, `reason`, `push_source`, `id`) in the
same pipeline as the XACK, before it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from core.errors import StoreUnavailableError
from streaming.batch import DeadLetter
from streaming.events import Event, envelope_event, redis_event
from streaming.metrics import LAG, PENDING, record_batch
from streaming.writer import BatchOutcome, StreamWriter

__all__ = ["RedisStreamConsumer", "StreamOptions"]

logger = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes] | list[bytes] | None]
"""An entry id and its fields: a dict (XAUTOCLAIM, parsed by redis-py), or the reply's flat
[name, value, ...] list (XREADGROUP, read raw: redis-py's per-entry parsing costs more than the rest of
reading); None when the entry was deleted."""


def _raw(reply: Any, **options: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Where and how a consumer reads (the `stream_*` settings)."""

    stream: str
    group: str
    consumer: str
    dead_letters: str
    batch: int = 5000
    block_ms: int = 500
    claim_idle_ms: int = 30_000
    retry_s: float = 1.0  # wait after a failed batch before reading it again
    stats_every_s: float = 1.0  # how often lag and pending are read


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamConsumer:
    """One consumer of the group on `options.stream`, writing through `writer`."""

    broker = "redis"

    def __init__(self, client: redis.Redis, writer: StreamWriter, options: StreamOptions) -> None:
        self.client = client
        self._reader = redis.Redis(connection_pool=client.connection_pool)  # same connections, raw replies
        self._reader.set_response_callback("XREADGROUP", _raw)
        self.writer = writer
        self.options = options
        self._backlog = True  # read this consumer's own pending entries first
        self._claim_from = "0-0"
        self._next_claim = 0.0
        self._next_stats = 0.0

    def ensure_group(self) -> None:
        """Create the stream and the group (reading from the stream's first entry) unless they exist."""
        try:
            self.client.xgroup_create(self.options.stream, self.options.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self, stop: threading.Event) -> None:
        """Read, write and acknowledge micro-batches until `stop` is set; the batch in hand is finished."""
        self.ensure_group()
        while not stop.is_set():
            try:
                self.step()
            except StoreUnavailableError as exc:
                logger.warning(
                    "stream: batch not acknowledged, retried in %.1f s: %s", self.options.retry_s, exc
                )
                self._backlog = True
                stop.wait(self.options.retry_s)
            except redis.RedisError as exc:
                logger.warning("stream: Redis: %s; retrying in %.1f s", exc, self.options.retry_s)
                self._backlog = True
                stop.wait(self.options.retry_s)
        self.leave()

    def leave(self) -> None:
        """Remove this consumer from the group when it holds nothing (names are per process: the group
        would otherwise collect one dead name per restart). Entries it still holds keep it listed."""
        options = self.options
        try:
            consumers = cast(
                "list[dict[Any, Any]]", self.client.xinfo_consumers(options.stream, options.group)
            )
            mine = [c for c in consumers if _text(c.get("name") or c.get(b"name") or b"") == options.consumer]
            if mine and not int(mine[0].get("pending", mine[0].get(b"pending")) or 0):
                self.client.xgroup_delconsumer(options.stream, options.group, options.consumer)
        except redis.RedisError as exc:
            logger.info("stream: could not leave the group: %s", exc)

    def step(self) -> int:
        """One micro-batch: entries taken over from dead consumers, else this consumer's pending entries,
        else new ones (waiting up to `block_ms`); returns how many entries were handled."""
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.options.stats_every_s
            self.update_stats()
        entries = self._claim() if now >= self._next_claim else []
        if not entries:
            entries = self._read()
        if entries:
            self.handle(entries)
        return len(entries)

    def _claim(self) -> list[Entry]:
        """Entries idle past `claim_idle_ms` in another consumer's hands, a page at a time."""
        options = self.options
        reply: Any = self.client.xautoclaim(
            options.stream,
            options.group,
            options.consumer,
            min_idle_time=options.claim_idle_ms,
            start_id=self._claim_from,
            count=options.batch,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_from = _text(cursor)
        if self._claim_from == "0-0":  # the whole pending list was scanned: look again later
            self._next_claim = time.monotonic() + options.claim_idle_ms / 2000
        if entries:
            logger.info("stream: took over %d entries from idle consumers", len(entries))
        return list(entries)

    def _read(self) -> list[Entry]:
        options = self.options
        start = "0" if self._backlog else ">"
        reply: Any = self._reader.xreadgroup(
            options.group,
            options.consumer,
            {options.stream: start},
            count=options.batch,
            block=None if self._backlog else options.block_ms,
        )
        if isinstance(reply, dict):  # RESP3: stream name -> entries
            reply = list(reply.items())
        entries: list[Entry] = [(entry[0], entry[1]) for entry in reply[0][1]] if reply else []
        if self._backlog and not entries:
            self._backlog = False
        return entries

    def handle(self, entries: Sequence[Entry]) -> BatchOutcome:
        """Write the entries, publish their dead letters, acknowledge them all."""
        started = time.perf_counter()
        # An entry trimmed from the stream while pending comes back without fields: nothing to write.
        events = [_event(entry_id, fields) for entry_id, fields in entries if fields]
        outcome = self.writer.write(events)
        pipe = self.client.pipeline(transaction=False)
        for letter in outcome.dead:
            pipe.xadd(self.options.dead_letters, _dead_fields(letter))
        pipe.xack(self.options.stream, self.options.group, *[entry_id for entry_id, _ in entries])
        pipe.execute()
        record_batch(self.broker, outcome, time.perf_counter() - started)
        return outcome

    def update_stats(self) -> None:
        """Set the lag and pending gauges from XINFO GROUPS (`lag` needs Redis 7)."""
        try:
            groups = cast("list[dict[Any, Any]]", self.client.xinfo_groups(self.options.stream))
        except redis.RedisError:
            return
        for group in groups:
            if _text(group.get("name") or group.get(b"name") or b"") == self.options.group:
                lag = group.get("lag", group.get(b"lag"))
                LAG.labels(self.broker).set(math.nan if lag is None else float(lag))
                PENDING.labels(self.broker).set(float(group.get("pending", group.get(b"pending")) or 0))


def _event(entry_id: bytes, fields: dict[bytes, bytes] | list[bytes]) -> Event:
    """The event of an entry, its fields as a dict or as the raw reply's flat list."""
    if isinstance(fields, list):
        if len(fields) == 2 and fields[0] == b"event":  # the contract's one field: no dict needed
            return envelope_event(_text(entry_id), fields[1])
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return redis_event(_text(entry_id), fields)


def _dead_fields(letter: DeadLetter) -> dict[Any, Any]:
    event: Event = letter.event
    return {
        "event": event.raw,
        "reason": letter.reason,
        "kind": letter.kind,
        "push_source": event.push_source or "",
        "id": event.message_id,
    }
