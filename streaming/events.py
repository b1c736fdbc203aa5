"""Events as brokers deliver them, read into plain values: the contract producers write to (docs/streaming.md).

- Redis Streams: an entry with one field `event` holding JSON `{"push_source": NAME, "row": {...}}`.
- NATS JetStream: subject `tandem.events.<push_source>`, the row as JSON payload.

The row is exactly a row of `POST /v1/push/{push_source}`. An event that cannot be read (bad JSON, not an
object, fields missing or unknown) keeps its bytes and an `error`, for the dead-letter stream. Each readable
event has a key, a digest of its push source and its row's content, so that the same event delivered or
sent again is recognised (`event_key`). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "Event",
    "event_key",
    "nats_event",
    "redis_event",
]

_decode = msgspec.json.Decoder().decode
_sorted = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True, slots=True)
class Event:
    """One delivered event: the broker's id for it, what it carries, and why it is unreadable (if it is)."""

    message_id: str  # Redis entry id, or the JetStream stream sequence
    raw: bytes  # what the producer sent (the `event` field, or the NATS payload)
    push_source: str | None = None
    row: Mapping[str, Any] | None = None
    error: str | None = None  # set: the event cannot be read; the reason goes with its dead letter


def _json(raw: bytes) -> tuple[Any, str | None]:
    try:
        return _decode(raw), None
    except msgspec.DecodeError as exc:
        return None, f"bad JSON: {exc}"


def redis_event(message_id: str, fields: Mapping[bytes, bytes] | None) -> Event:
    """The event of a Redis stream entry (`fields` None: the entry was deleted from the stream)."""
    if not fields:
        return Event(message_id, b"", error="entry has no fields (deleted from the stream?)")
    raw = fields.get(b"event")
    if raw is None or len(fields) != 1:
        names = ", ".join(sorted(name.decode("utf-8", "replace") for name in fields))
        return Event(message_id, raw or b"", error=f"expected one field `event`, got: {names}")
    data, error = _json(raw)
    if error is not None:
        return Event(message_id, raw, error=error)
    if not isinstance(data, dict):
        return Event(message_id, raw, error='expected a JSON object {"push_source": ..., "row": {...}}')
    unknown = sorted(set(data) - {"push_source", "row"})
    if unknown:
        return Event(message_id, raw, error=f"unknown field(s) {', '.join(unknown)}")
    source, row = data.get("push_source"), data.get("row")
    if not isinstance(source, str) or not source:
        return Event(message_id, raw, error="push_source: expected a non-empty string")
    if not isinstance(row, dict):
        return Event(message_id, raw, push_source=source, error="row: expected a JSON object")
    return Event(message_id, raw, push_source=source, row=row)


def nats_event(message_id: str, subject: str, payload: bytes, *, prefix: str = "tandem.events.") -> Event:
    """The event of a JetStream message on `<prefix><push_source>` (`tandem.events.<push_source>`)."""
    source = subject.removeprefix(prefix) if subject.startswith(prefix) else ""
    if not source or "." in source:
        return Event(message_id, payload, error=f"subject {subject!r} is not {prefix}<push_source>")
    data, error = _json(payload)
    if error is not None:
        return Event(message_id, payload, push_source=source, error=error)
    if not isinstance(data, dict):
        return Event(message_id, payload, push_source=source, error="expected the row as a JSON object")
    return Event(message_id, payload, push_source=source, row=data)


def event_key(push_source: str, row: Mapping[str, Any]) -> uuid.UUID:
    """The event's identity: a 128-bit digest of its push source and its row (keys in sorted order), the
    same however often and by whichever broker the event arrives."""
    digest = hashlib.blake2b(push_source.encode("utf-8"), digest_size=16)
    digest.update(b"\0")
    digest.update(_sorted(row))
    return uuid.UUID(bytes=digest.digest())
