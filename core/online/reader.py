"""One online read per request: a feature service's values, their event times and the stored batch score.

Reads Feast's Redis layout (see `core.online.encoding`) without importing Feast. Every view of one entity
lives in one hash, so an entity is one `HMGET key <fields>`, and k entities are k HMGETs sent together on
one pooled connection before any reply is read: one round trip. The field list is the same for every
entity: each service feature's `mmh3("view:feature")`, each view's `_ts:view`, then the stored-scores
view's four features and its `_ts`. An error reply (a key that is not a hash) raises ResponseError after
every reply was read, as redis-py's pipeline does; connection errors follow the client's retry policy.

What comes back is what is stored, like Feast's `get_online_features`, which ignores a view's TTL online
(feast-dev/feast#6821); `apply_ttl` nulls expired views the way offline retrieval does, for callers that
want point-in-time semantics. The client must return bytes (`decode_responses=False`, redis-py's default).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import call
from typing import Any, Protocol

import redis
import redis.asyncio
from redis.exceptions import ResponseError

from core.errors import ConfigurationError
from core.features.specs import ServiceSpec, ViewSpec
from core.online.decoding import Scalar, decode_snapshot, decode_timestamp, value_decoder
from core.online.encoding import entity_key_prefix, feature_field, timestamp_field

__all__ = ["OnlineReader", "OnlineRow", "StoredPrediction", "apply_ttl"]

_STORED_FEATURES = ("score", "model_version", "run_id", "feature_snapshot_ts")
_ENTITY_ID = struct.Struct("<q")
_decode_score, _decode_string = value_decoder("float64"), value_decoder("string")


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """The entity's published batch score and what it was computed from."""

    score: float
    model_version: str
    run_id: str
    scored_at: datetime  # the event time of the stored-scores view's row
    feature_snapshot_ts: dict[str, datetime | None]  # per feature view: event time of the row the score used


@dataclass(frozen=True, slots=True)
class OnlineRow:
    """One entity's online state."""

    entity_id: int
    values: dict[str, Scalar]  # "view:feature" -> value; None: null or missing
    event_ts: dict[str, datetime | None]  # view -> online event time; None: no row of that view
    stored: StoredPrediction | None  # None: no stored prediction, or an incomplete one


def _stored_prediction(raw: Sequence[bytes | None]) -> StoredPrediction | None:
    """The stored prediction from its view's four fields and `_ts`; None unless all five are there."""
    score_raw, version_raw, run_raw, snapshot_raw, ts_raw = raw
    if ts_raw is None:
        return None
    score = _decode_score(score_raw)
    version, run_id, snapshot = map(_decode_string, (version_raw, run_raw, snapshot_raw))
    if (
        not isinstance(score, float | int)
        or isinstance(score, bool)
        or not isinstance(version, str)
        or not isinstance(run_id, str)
        or not isinstance(snapshot, str)
    ):
        return None
    snapshot_ts = decode_snapshot(snapshot)
    if snapshot_ts is None:
        return None
    return StoredPrediction(
        score=float(score),
        model_version=version,
        run_id=run_id,
        scored_at=decode_timestamp(ts_raw),
        feature_snapshot_ts=snapshot_ts,
    )


class _Connection(Protocol):
    """The part of redis-py's (untyped) `Connection` the reader uses."""

    retry: Any

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


class _AsyncConnection(Protocol):
    """The part of redis-py's asyncio `Connection` the reader uses."""

    retry: Any

    async def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    async def read_response(self) -> Any: ...
    async def disconnect(self) -> None: ...


class OnlineReader:
    """Reads a feature service and its stored scores for k entities in one Redis round trip.

    Built once per process from the specs (`core.features.snapshots.service_specs`); thread- and task-safe. The k
    HMGETs go out as one pre-packed RESP buffer on one pooled connection (redis-py's pipeline would pack
    each command anew: about 2x slower at k=100), under the connection's retry policy, as a pipeline would.
    """

    def __init__(self, *, project: str, service: ServiceSpec, predictions: ViewSpec) -> None:
        if predictions.join_key != service.join_key:
            raise ConfigurationError(
                f"view {predictions.name!r} joins on {predictions.join_key!r}, "
                f"service {service.name!r} on {service.join_key!r}"
            )
        for name in _STORED_FEATURES:
            predictions.feature(name)  # NotFoundError naming a missing one
        features = [(view.name, feature) for view in service.views for feature in view.features]
        self._refs = tuple(f"{view}:{feature.name}" for view, feature in features)
        self._decoders = tuple(value_decoder(feature.kind) for _, feature in features)
        self._views = tuple(view.name for view in service.views)
        self._fields = (
            [feature_field(view, feature.name) for view, feature in features]
            + [timestamp_field(view) for view in self._views]
            + [feature_field(predictions.name, name) for name in _STORED_FEATURES]
            + [timestamp_field(predictions.name)]
        )
        self._ts_start = len(self._refs)
        self._stored_start = self._ts_start + len(self._views)
        # Per entity: `*N $5 HMGET $len <prefix>` + 8 id bytes + `<project> CRLF <fields>`.
        prefix, suffix = entity_key_prefix(service.join_key), project.encode("utf-8")
        self._key_parts = (prefix, suffix)
        head = b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n" % (2 + len(self._fields), len(prefix) + 8 + len(suffix))
        tail = b"\r\n" + b"".join(b"$%d\r\n%b\r\n" % (len(field), field) for field in self._fields)
        self._head, self._tail = head + prefix, suffix + tail
        self._between = self._tail + self._head

    def fields(self) -> list[bytes]:
        """The HMGET field list, the same for every entity."""
        return list(self._fields)

    def key(self, entity_id: int) -> bytes:
        """Feast's Redis key of an entity (v3 serialized entity key + project)."""
        prefix, suffix = self._key_parts
        return prefix + _entity_id(entity_id) + suffix

    def request(self, entity_ids: Sequence[int]) -> bytes:
        """The RESP bytes of one `HMGET <key> <fields...>` per entity."""
        ids = [_entity_id(entity_id) for entity_id in entity_ids]
        return self._head + self._between.join(ids) + self._tail if ids else b""

    def decode(self, entity_id: int, raw: Sequence[bytes | None]) -> OnlineRow:
        """One entity's row from its HMGET reply (one item per field of `fields()`, None where absent).

        Pure. A value or timestamp that isn't what Feast writes raises ValueError (see core.online.decoding).
        """
        if len(raw) != len(self._fields):
            raise ValueError(f"expected {len(self._fields)} field values, got {len(raw)}")
        ts_start, stored_start = self._ts_start, self._stored_start
        values = dict(zip(self._refs, map(call, self._decoders, raw[:ts_start]), strict=True))
        event_ts = {
            view: None if data is None else decode_timestamp(data)
            for view, data in zip(self._views, raw[ts_start:stored_start], strict=True)
        }
        return OnlineRow(entity_id, values, event_ts, _stored_prediction(raw[stored_start:]))

    def read_sync(self, client: redis.Redis, entity_ids: Sequence[int]) -> list[OnlineRow]:
        """Rows for `entity_ids`, in order, from one round trip (none for no ids)."""
        _check_bytes(client)
        payload = self.request(entity_ids)
        if not payload:
            return []
        pool = client.connection_pool
        connection: _Connection = pool.get_connection()

        def round_trip() -> list[Any]:
            try:
                connection.send_packed_command([payload])
                return _replies([_read(connection.read_response) for _ in entity_ids])
            except BaseException:
                connection.disconnect()  # unread replies must not reach the pool's next user
                raise

        try:
            replies = connection.retry.call_with_retry(round_trip, lambda _: connection.disconnect())
        finally:
            pool.release(connection)  # type: ignore[arg-type]  # our Protocol is redis-py's Connection
        return [self.decode(entity_id, reply) for entity_id, reply in zip(entity_ids, replies, strict=True)]

    async def read_via(
        self, transport: Callable[[bytes, int], Awaitable[list[Any]]], entity_ids: Sequence[int]
    ) -> list[OnlineRow]:
        """Rows for `entity_ids` through `transport(payload, replies)` (e.g. core.online.resp_pool.RespPool.request)."""
        payload = self.request(entity_ids)
        if not payload:
            return []
        replies = await transport(payload, len(entity_ids))
        return [self.decode(entity_id, reply) for entity_id, reply in zip(entity_ids, replies, strict=True)]

    async def read(self, client: redis.asyncio.Redis, entity_ids: Sequence[int]) -> list[OnlineRow]:
        """Rows for `entity_ids`, in order, from one round trip (none for no ids)."""
        _check_bytes(client)
        payload = self.request(entity_ids)
        if not payload:
            return []
        pool = client.connection_pool
        connection: _AsyncConnection = await pool.get_connection()  # type: ignore[no-untyped-call]  # untyped

        async def round_trip() -> list[Any]:
            try:
                await connection.send_packed_command([payload])
                return _replies([await _read_async(connection.read_response) for _ in entity_ids])
            except BaseException:  # cancellation included: a half-read connection is dropped
                await connection.disconnect()
                raise

        async def dropped(_: Exception) -> None:
            await connection.disconnect()

        try:
            replies = await connection.retry.call_with_retry(round_trip, dropped)
        finally:
            await pool.release(connection)  # type: ignore[arg-type]  # our Protocol is redis-py's Connection
        return [self.decode(entity_id, reply) for entity_id, reply in zip(entity_ids, replies, strict=True)]


def _entity_id(entity_id: int) -> bytes:
    try:
        return _ENTITY_ID.pack(entity_id)
    except struct.error:
        raise ValueError(f"entity id {entity_id!r} is not an int64") from None


def _read(read_response: Callable[[], Any]) -> Any:
    """One reply; an error reply is returned (not raised) so the remaining replies are still read."""
    try:
        return read_response()
    except ResponseError as error:
        return error


async def _read_async(read_response: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await read_response()
    except ResponseError as error:
        return error


def _replies(replies: list[Any]) -> list[Any]:
    """The replies, or the first error reply raised (e.g. WRONGTYPE: a key that is not a hash)."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


def _check_bytes(client: redis.Redis | redis.asyncio.Redis) -> None:
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ConfigurationError("the online reader needs a Redis client with decode_responses=False")


def apply_ttl(row: OnlineRow, service: ServiceSpec, *, now: datetime) -> OnlineRow:
    """The row as offline retrieval at `now` would see it: a view whose row is older than its TTL is absent.

    Offline, a view's row counts when `event_timestamp >= as_of - ttl`; here a view with `ttl_s > 0` whose
    event time is before `now - ttl` (or unknown) gets null values and no event time. `ttl_s == 0` means no
    TTL. The stored prediction is left alone: its age is the blend policy's `max_staleness_s`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    expired = [
        view
        for view in service.views
        if view.ttl_s > 0
        and ((stamp := row.event_ts.get(view.name)) is None or stamp < now - timedelta(seconds=view.ttl_s))
    ]
    if not expired:
        return row
    values = dict(row.values)
    event_ts = dict(row.event_ts)
    for view in expired:
        event_ts[view.name] = None
        for feature in view.features:
            values[f"{view.name}:{feature.name}"] = None
    return replace(row, values=values, event_ts=event_ts)
