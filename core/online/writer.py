"""Write feature rows to Feast's Redis online store, byte-identical to Feast's own writer and ~10x faster.

Feast builds protobuf objects per value (`write_to_online_store`: ~25k rows/s here, conversion included;
`online_write_batch` alone ~50k rows/s); this writer (~300k rows/s, bound by Redis executing HSET) computes
the same bytes with `core.online.encoding` and sends them as one pre-packed RESP buffer per batch over one
pooled connection: per row `HSET <key> _ts:<view> <Timestamp> <mmh3 field> <Value> ...`, then
`EXPIRE <key> <ttl>` when a key TTL is given — exactly the commands Feast sends. Other views' fields in the
same hash are left alone, as with Feast.

Differences from Feast, on purpose:

- no timestamp dedup: unless `skip_dedup` is set, Feast first HMGETs `_ts:<view>` and skips a row whose
  event time is not newer than the stored one. A batch run is always the newest publication, so this writer
  always overwrites (this is Feast's `skip_dedup: true` path);
- `view` is the name Feast puts in fields and keys, i.e. `_versioned_fv_name(view, config)`: the plain view
  name unless `registry.enable_online_feature_view_versioning` is on (then `<name>_v<N>`);
- the pipeline is not transactional and batches are independent: on a Redis error the batches before the
  failing one, and that batch's other commands, are written; nothing after it is sent; the exception
  propagates and the caller rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import chain, repeat
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt
import redis
from redis.exceptions import ResponseError

from core.online.encoding import (
    FeatureColumn,
    encode_entity_keys,
    encode_timestamps,
    encode_values,
    feature_field,
    timestamp_field,
)

__all__ = ["FeatureColumn", "encode_entity_keys", "write_feature_rows"]


class _Connection(Protocol):
    """The part of redis-py's (untyped) `Connection` this writer uses."""

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> object: ...
    def disconnect(self) -> None: ...


def _bulk(data: bytes) -> bytes:
    """One RESP bulk string, with its trailing CRLF."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


_LENGTH_HEADERS = np.array([b"$%d\r\n" % size for size in range(4_096)], dtype=object)


def _length_headers(values: list[bytes]) -> list[bytes]:
    """The RESP length header in front of each value, by table lookup (no per-value formatting)."""
    sizes = np.fromiter(map(len, values), dtype=np.intp, count=len(values))
    if len(values) and int(sizes.max()) >= len(_LENGTH_HEADERS):
        return [b"$%d\r\n" % size for size in sizes.tolist()]
    return cast("list[bytes]", _LENGTH_HEADERS[sizes].tolist())


def write_feature_rows(
    client: redis.Redis,
    *,
    project: str,
    view: str,
    join_key: str,
    entity_ids: npt.NDArray[np.int64],
    columns: Sequence[FeatureColumn],
    event_timestamps: npt.NDArray[np.datetime64] | datetime,
    key_ttl_s: int | None = None,
    batch_rows: int = 5_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write one row per entity id into the Redis hashes Feast reads for `view`; returns the rows written.

    Each column holds one value per id (None/NA/NaN is a null, stored as Feast does: an empty value).
    `event_timestamps` is one datetime for all rows or one datetime64 per row (naive means UTC); Feast keeps
    microseconds. `key_ttl_s`, like Feast's `key_ttl_seconds`, EXPIREs each written key (0/None: no expiry).
    `progress` gets the number of rows of each batch once Redis has acknowledged it. Raises on any Redis
    error. Batches overlap: batch k+1 is encoded while Redis executes batch k.
    """
    ids = np.asarray(entity_ids, dtype=np.int64)
    rows = len(ids)
    _validate(ids, columns, event_timestamps, batch_rows)
    pool = client.connection_pool
    pooled = pool.get_connection()
    connection: _Connection = pooled
    try:
        sent: tuple[int, int] | None = None  # (rows, commands) of the batch whose replies are unread
        for start in range(0, rows, batch_rows):
            stop = min(start + batch_rows, rows)
            payload, commands = _pack_batch(
                project=project,
                view=view,
                join_key=join_key,
                ids=ids[start:stop],
                columns=[FeatureColumn(c.name, c.kind, c.values[start:stop]) for c in columns],
                event_timestamps=(
                    event_timestamps
                    if isinstance(event_timestamps, datetime)
                    else event_timestamps[start:stop]
                ),
                key_ttl_s=key_ttl_s,
            )
            if sent is not None:
                _read_replies(connection, sent, progress)
            connection.send_packed_command([payload])
            sent = (stop - start, commands)
        if sent is not None:
            _read_replies(connection, sent, progress)
    except BaseException:
        connection.disconnect()  # unread replies must not reach the pool's next user
        raise
    finally:
        pool.release(pooled)
    return rows


def _validate(
    ids: npt.NDArray[np.int64],
    columns: Sequence[FeatureColumn],
    event_timestamps: npt.NDArray[np.datetime64] | datetime,
    batch_rows: int,
) -> None:
    if ids.ndim != 1:
        raise ValueError("entity_ids must be one-dimensional")
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    names = [column.name for column in columns]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"need distinct feature columns, got {names}")
    for column in columns:
        if len(column.values) != len(ids):
            raise ValueError(f"column {column.name!r} has {len(column.values)} values for {len(ids)} ids")
    if not isinstance(event_timestamps, datetime) and len(event_timestamps) != len(ids):
        raise ValueError(f"{len(event_timestamps)} event timestamps for {len(ids)} entity ids")


def _pack_batch(
    *,
    project: str,
    view: str,
    join_key: str,
    ids: npt.NDArray[np.int64],
    columns: Sequence[FeatureColumn],
    event_timestamps: npt.NDArray[np.datetime64] | datetime,
    key_ttl_s: int | None,
) -> tuple[bytes, int]:
    """The RESP bytes of every command of one batch, and how many commands they are."""
    rows = len(ids)
    keys = encode_entity_keys(join_key=join_key, entity_ids=ids, project=project)
    key_size = len(keys[0]) if keys else 0
    # Feast's field order: the timestamp first, then the features.
    fields = [timestamp_field(view)] + [feature_field(view, column.name) for column in columns]
    values = [encode_timestamps(event_timestamps, rows)]
    values += [encode_values(column.kind, column.values) for column in columns]

    # Per row: HSET header + key, then (field, length header, value) triples, each value's CRLF opening
    # the next constant piece; constant pieces repeat, the others are one list per column.
    head = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n" % (2 + 2 * len(fields), key_size)
    parts: list[Iterable[bytes]] = [repeat(head, rows), keys]
    for field, column_values in zip(fields, values, strict=True):
        parts += [repeat(b"\r\n" + _bulk(field), rows), _length_headers(column_values), column_values]
    parts.append(repeat(b"\r\n", rows))
    commands = rows
    if key_ttl_s:
        expire = b"*3\r\n$6\r\nEXPIRE\r\n$%d\r\n" % key_size
        parts += [repeat(expire, rows), keys, repeat(b"\r\n" + _bulk(b"%d" % key_ttl_s), rows)]
        commands += rows
    return b"".join(chain.from_iterable(zip(*parts))), commands  # noqa: B905 - repeat() is endless


def _read_replies(
    connection: _Connection, sent: tuple[int, int], progress: Callable[[int], None] | None
) -> None:
    """Read every reply of one batch (the connection stays in sync), then raise its first error, if any."""
    rows, commands = sent
    first_error: ResponseError | None = None
    for _ in range(commands):
        try:
            connection.read_response()
        except ResponseError as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error
    if progress is not None:
        progress(rows)
