"""How far each feature view has been materialized: the latest `end_date` Feast recorded for it.

Feast keeps a view's materialization intervals in the view's proto in its SQL registry
(`FeatureView.meta.materialization_intervals`, appended by every `materialize[_incremental]`). Reading them
through Feast means importing Feast (seconds) and building every registry object; this module reads the
proto bytes with one query and walks just the protobuf wire format down to the intervals' end times:

    FeatureView            { FeatureViewSpec spec = 1; FeatureViewMeta meta = 2; }
    FeatureViewMeta        { ...; repeated MaterializationInterval materialization_intervals = 3; ... }
    MaterializationInterval{ Timestamp start_time = 1; Timestamp end_time = 2; }
    Timestamp              { int64 seconds = 1; int32 nanos = 2; }

Unknown fields are skipped, as protobuf does. An integration test checks the result against Feast's own
`FeatureView.materialization_intervals`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from core.endpoints import FEAST_REGISTRY_SCHEMA

__all__ = ["latest_materialized_end", "materialization_watermarks"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("malformed protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field: an int for varints, bytes for the others."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == 2:
            size, pos = _varint(data, pos)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos + size > len(data):
            raise ValueError("truncated protobuf field")
        yield number, wire, data[pos : pos + size]
        pos += size


def _timestamp(data: bytes) -> datetime:
    seconds, nanos = 0, 0
    for number, wire, value in _fields(data):
        if wire == 0 and number == 1:
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif wire == 0 and number == 2:
            nanos = value
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def latest_materialized_end(feature_view_proto: bytes) -> datetime | None:
    """The latest materialization interval end in a serialized FeatureView, or None if never materialized."""
    latest: datetime | None = None
    for number, wire, meta in _fields(feature_view_proto):
        if number != 2 or wire != 2:
            continue
        for meta_number, meta_wire, interval in _fields(meta):
            if meta_number != 3 or meta_wire != 2:
                continue
            for interval_number, interval_wire, stamp in _fields(interval):
                if interval_number == 2 and interval_wire == 2:
                    end = _timestamp(stamp)
                    latest = end if latest is None or end > latest else latest
    return latest


def materialization_watermarks(
    conn: psycopg.Connection[Any],
    *,
    project: str,
    views: Sequence[str],
    schema: str = FEAST_REGISTRY_SCHEMA,
) -> dict[str, datetime | None]:
    """Per view (in the order given): its latest materialized end time, None if never materialized or unknown.

    `schema` holds Feast's registry tables: `core.features.registry.registry_schema(settings, stores)`.
    """
    query = sql.SQL(
        "SELECT feature_view_name, feature_view_proto FROM {}.feature_views "
        "WHERE project_id = %s AND feature_view_name = ANY(%s)"
    ).format(sql.Identifier(schema))
    rows = conn.execute(query, (project, list(views))).fetchall()
    found = {str(name): latest_materialized_end(bytes(proto)) for name, proto in rows}
    return {view: found.get(view) for view in views}
