"""The stream's PostgreSQL side: event keys and offline rows in one transaction, the outbox, pruning.

`append_new` records a group's event keys in `tandem.stream_seen` and COPYs into the view's source table
only the rows whose key was new, inside the caller's transaction: the keys commit with the rows they stand
for, so a replayed event appends nothing, and two consumers racing on the same event append it once (the
second waits on the first's key, then skips it). The keys are COPYed (fast); a known key makes the unique
index refuse that COPY, and the keys then go through `INSERT ... ON CONFLICT DO NOTHING RETURNING`.
Both COPYs are binary buffers built for the whole group (`seen_copy`, `streaming.offline_copy`); rows for
a table whose column types the binary buffer does not write exactly are COPYed as text, row by row.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from core.batch.copy import COPY_HEADER, COPY_TRAILER, binary_field
from core.errors import NotFoundError
from core.online.rows import FeatureRows
from core.push.outbox import outbox_payload
from core.push.rows import offline_rows
from streaming.batch import ViewBatch
from streaming.offline_copy import copy_buffer, offline_columns

__all__ = ["append_new", "defer_online", "prune_seen", "seen_copy"]

_SEEN = (
    "INSERT INTO tandem.stream_seen (event_key, push_source, broker, stream, message_id) "
    "SELECT k, %(source)s, %(broker)s, %(stream)s, m FROM unnest(%(keys)s::uuid[], %(ids)s::text[]) AS t(k, m) "
    "ON CONFLICT (event_key) DO NOTHING RETURNING event_key"
)
_SEEN_COPY = (
    "COPY tandem.stream_seen (event_key, push_source, broker, stream, message_id) FROM STDIN (FORMAT BINARY)"
)
_OUTBOX = (
    "INSERT INTO tandem.push_outbox (view, rows, payload, attempts, last_error) "
    "VALUES (%(view)s, %(rows)s, %(payload)s, 1, %(error)s)"
)
_FIELDS = struct.Struct(">hi")  # a tuple's field count, then the first field's length
_COLUMN_TYPES = (
    "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
    "WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
)
_PRUNE = "DELETE FROM tandem.stream_seen WHERE seen_at < now() - make_interval(secs => %(keep_s)s)"


def append_new(conn: psycopg.Connection[Any], group: ViewBatch, *, broker: str, stream: str) -> list[int]:
    """Record the group's keys; COPY the rows of those seen for the first time (first of equal keys);
    returns their positions. Inside the caller's transaction. NotFoundError: the view reads a query."""
    view = group.view
    if view.reads_query:
        raise NotFoundError(f"view {view.name!r} reads a query, not a table: events cannot be appended")
    positions = _first_seen(conn, group, broker=broker, stream=stream)
    if not positions:
        return []
    every = len(positions) == len(group.events)
    binary = copy_buffer(group.valid, _column_types(conn, view.table), None if every else positions)
    if binary is not None:
        columns = [name for name, _, _ in offline_columns(group.valid)]
        with conn.cursor() as cursor, cursor.copy(_copy(view.table, columns, binary=True)) as copy:
            copy.write(binary)
        return positions
    rows = offline_rows(group.valid)  # column types the binary COPY does not write: as text, row by row
    records = rows.records if every else [rows.records[i] for i in positions]
    with conn.cursor() as cursor, cursor.copy(_copy(view.table, rows.columns, binary=False)) as copy:
        for record in records:
            copy.write_row(record)
    return positions


def _copy(table: str, columns: Sequence[str], *, binary: bool) -> sql.Composed:
    return sql.SQL("COPY {table} ({columns}) FROM STDIN{binary}").format(
        table=sql.SQL(table),  # from Feast's registry, never from an event
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        binary=sql.SQL(" (FORMAT BINARY)" if binary else ""),
    )


def _column_types(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """Column -> type name of a table (read in the COPY's transaction: what the COPY will meet)."""
    with conn.cursor() as cursor:
        cursor.execute(_COLUMN_TYPES, {"table": table})
        return {str(name): str(kind) for name, kind in cursor.fetchall()}


def _text(value: str) -> bytes:
    return binary_field(value.encode("utf-8"))


def seen_copy(keys: list[bytes], message_ids: list[str], *, source: str, broker: str, stream: str) -> bytes:
    """The binary COPY of `tandem.stream_seen` rows (`_SEEN_COPY`'s columns), header and trailer included:
    built in one join, no Python objects per field."""
    head = _FIELDS.pack(5, 16)
    middle = _text(source) + _text(broker) + _text(stream)
    texts = (_text(message_id) for message_id in message_ids)
    body = b"".join(head + key + middle + text for key, text in zip(keys, texts, strict=True))
    return COPY_HEADER + body + COPY_TRAILER


def _first_seen(conn: psycopg.Connection[Any], group: ViewBatch, *, broker: str, stream: str) -> list[int]:
    """Positions of the events whose key is new (the first of equal keys), their keys recorded.

    Replays are rare: the keys are COPYed first (in a savepoint); only when one is already known does the
    unique index refuse the COPY, and the keys go through `INSERT ... ON CONFLICT DO NOTHING` instead."""
    keys = group.keys
    if len(set(keys)) == len(keys):
        first = list(range(len(keys)))
    else:
        first, known = [], set()
        for position, key in enumerate(keys):
            if key not in known:  # an equal key later in the batch is the same event
                known.add(key)
                first.append(position)
    ids = [group.events[i].message_id for i in first]
    firsts = [keys[i] for i in first]
    data = seen_copy(firsts, ids, source=group.push_source, broker=broker, stream=stream)
    try:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(_SEEN_COPY) as copy:
            copy.write(data)
        return first
    except psycopg.errors.UniqueViolation:
        pass  # some were seen before: the savepoint is rolled back
    params = {
        "source": group.push_source,
        "broker": broker,
        "stream": stream,
        "keys": [uuid.UUID(bytes=key) for key in firsts],
        "ids": ids,
    }
    with conn.cursor() as cursor:
        cursor.execute(_SEEN, params, binary=True)
        new = {row[0].bytes for row in cursor.fetchall()}
    return [i for i in first if keys[i] in new]


def defer_online(conn: psycopg.Connection[Any], rows: FeatureRows, *, error: str) -> None:
    """Leave online rows Redis missed to the push outbox (the scheduler's `push_outbox` job writes them)."""
    with conn.transaction():
        conn.execute(
            _OUTBOX,
            {
                "view": rows.view,
                "rows": len(rows),
                "payload": Jsonb(outbox_payload(rows)),
                "error": error[:500],
            },
        )


def prune_seen(conn: psycopg.Connection[Any], *, keep_s: float) -> int:
    """Forget event keys older than `keep_s`; returns how many."""
    with conn.transaction():
        return conn.execute(_PRUNE, {"keep_s": keep_s}).rowcount
