"""Every Redis command Tandem sends to the online store, as pre-packed RESP bytes, and their replies decoded.

The one place that produces the wire format. Keys (`core.online.keys`), fields and values
(`core.online.encoding`) are Feast's; this module lays them out as commands, the same ones Feast sends:

- read: per entity one `HMGET <key> <features...> <_ts:views...> <stored-score fields...> <_ts:scores>`,
  k entities in one buffer (`ReadLayout`); redis-py's pipeline would pack each command anew, ~2x slower;
- write: per row `HSET <key> _ts:<view> <Timestamp> <mmh3 field> <Value> ...` (Feast's field order), then
  `EXPIRE <key> <ttl>` when a key TTL is set (`pack_hsets`); other views' fields in the hash stay;
- newer-wins: one atomic compare-and-set script per entity, in `core.online.newer_wins`;
- delete: `HDEL <key> <fields...>` (`pack_hdels`), and `SCAN`/`DEL` for a project's keys.

Pure: no I/O. Transports (`core.online.transport`, `core.online.resp_pool`) move the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from operator import call
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from core.errors import ConfigurationError
from core.features.keys import EntityId, EntityKey
from core.features.specs import ServiceSpec, ViewSpec
from core.online.columns import decode_stamps, decode_values
from core.online.decoding import decode_snapshot, decode_timestamp, value_decoder
from core.online.encoding import encode_timestamps, encode_values, feature_field, timestamp_field
from core.online.keys import encode_keys, entity_key_prefix
from core.online.rows import STORED_FEATURES, FeatureRows, OnlineRow, StoredPrediction

__all__ = [
    "ReadLayout",
    "command",
    "pack_hdels",
    "pack_hsets",
    "view_fields",
]

_ENTITY_IDS = {"int64": struct.Struct("<q"), "int32": struct.Struct("<i")}
_decode_score, _decode_string = value_decoder("float64"), value_decoder("string")


def _bulk(data: bytes) -> bytes:
    """One RESP bulk string, with its trailing CRLF."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def command(*parts: bytes) -> bytes:
    """One RESP command."""
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(part) for part in parts)


def _id_packer(kind: str) -> Callable[[int], bytes]:
    packer = _ENTITY_IDS[kind].pack

    def pack(entity_id: int) -> bytes:
        try:
            return packer(entity_id)
        except struct.error:
            raise ValueError(f"entity id {entity_id!r} is not an {kind}") from None

    return pack


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


class ReadLayout:
    """The HMGET of one feature service and its stored scores: request bytes for k entities, rows from replies.

    Built once per service (thread- and task-safe). The field list is the same for every entity: each
    service feature's `mmh3("view:feature")`, each view's `_ts:view`, then the stored-scores view's four
    features and its `_ts`.
    """

    def __init__(self, *, project: str, service: ServiceSpec, predictions: ViewSpec) -> None:
        if predictions.key != service.key:
            raise ConfigurationError(
                f"view {predictions.name!r} joins on {predictions.key.describe()}, "
                f"service {service.name!r} on {service.key.describe()}"
            )
        for name in STORED_FEATURES:
            predictions.feature(name)  # NotFoundError naming a missing one
        features = [(view.name, feature) for view in service.views for feature in view.features]
        self.service = service
        self.predictions = predictions
        self._refs = tuple(f"{view}:{feature.name}" for view, feature in features)
        self._kinds = tuple(feature.kind for _, feature in features)
        self._decoders = tuple(value_decoder(kind) for kind in self._kinds)
        self._views = tuple(view.name for view in service.views)
        self._fields = (
            [feature_field(view, feature.name) for view, feature in features]
            + [timestamp_field(view) for view in self._views]
            + [feature_field(predictions.name, name) for name in STORED_FEATURES]
            + [timestamp_field(predictions.name)]
        )
        self._ts_start = len(self._refs)
        self._stored_start = self._ts_start + len(self._views)
        self.key_spec: EntityKey = service.key
        self._project = project
        self._command_head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(self._fields))
        self._fields_tail = b"".join(_bulk(field) for field in self._fields)
        kind = service.key.int_kind
        if kind is None:
            return
        # A single int key: per entity `*N $5 HMGET $len <prefix>` + id bytes (8 or 4) + `<project> CRLF <fields>`.
        prefix, suffix = entity_key_prefix(service.key.join_keys[0], kind), project.encode("utf-8")
        self._key_parts = (prefix, suffix)
        self._pack_id = _id_packer(kind)
        width = _ENTITY_IDS[kind].size
        head = b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n" % (2 + len(self._fields), len(prefix) + width + len(suffix))
        tail = b"\r\n" + self._fields_tail
        self._head, self._tail = head + prefix, suffix + tail
        self._between = self._tail + self._head

    def fields(self) -> list[bytes]:
        """The HMGET field list, the same for every entity."""
        return list(self._fields)

    def key(self, entity_id: EntityId) -> bytes:
        """Feast's Redis key of an entity (v3 serialized entity key + project)."""
        if self.key_spec.int_kind is None:
            return encode_keys(self.key_spec, [entity_id], project=self._project)[0]
        prefix, suffix = self._key_parts
        return prefix + self._pack_id(entity_id) + suffix  # type: ignore[arg-type]

    def request(self, entity_ids: Sequence[EntityId]) -> bytes:
        """The RESP bytes of one `HMGET <key> <fields...>` per entity (empty for no ids); ValueError for an id
        that does not fit the key."""
        if not entity_ids:
            return b""
        if self.key_spec.int_kind is None:
            keys = encode_keys(self.key_spec, entity_ids, project=self._project)
            head, tail = self._command_head, self._fields_tail
            return b"".join(head + _bulk(key) + tail for key in keys)
        ids = [self._pack_id(entity_id) for entity_id in entity_ids]  # type: ignore[arg-type]
        return self._head + self._between.join(ids) + self._tail

    def decode(self, entity_id: EntityId, raw: Sequence[bytes | None]) -> OnlineRow:
        """One entity's row from its HMGET reply (one item per field of `fields()`, None where absent).

        A value or timestamp that isn't what Feast writes raises ValueError (see core.online.decoding).
        """
        if not isinstance(raw, list | tuple) or len(raw) != len(self._fields):
            raise ValueError(f"expected {len(self._fields)} field values, got {raw!r:.80}")
        ts_start, stored_start = self._ts_start, self._stored_start
        values = dict(zip(self._refs, map(call, self._decoders, raw[:ts_start]), strict=True))
        event_ts = {
            view: None if data is None else decode_timestamp(data)
            for view, data in zip(self._views, raw[ts_start:stored_start], strict=True)
        }
        return OnlineRow(entity_id, values, event_ts, _stored_prediction(raw[stored_start:]))

    def decode_all(self, entity_ids: Sequence[EntityId], replies: Sequence[Any]) -> list[OnlineRow]:
        """Rows for `entity_ids` from their replies, in order: `decode` of each, a field at a time
        (core.online.columns)."""
        if len(entity_ids) != len(replies):
            raise ValueError(f"{len(replies)} replies for {len(entity_ids)} entities")
        width = len(self._fields)
        if not all(isinstance(raw, list | tuple) and len(raw) == width for raw in replies):
            return [self.decode(entity_id, raw) for entity_id, raw in zip(entity_ids, replies, strict=True)]
        ts_start, stored_start = self._ts_start, self._stored_start
        columns = list(zip(*replies, strict=True)) if replies else [()] * width
        values = [
            decode_values(kind, decoder, column)
            for kind, decoder, column in zip(self._kinds, self._decoders, columns[:ts_start], strict=True)
        ]
        stamps = [decode_stamps(column) for column in columns[ts_start:stored_start]]
        stored = [_stored_prediction(raw) for raw in zip(*columns[stored_start:], strict=True)]
        refs, views = self._refs, self._views
        return [
            OnlineRow(
                entity_id,
                dict(zip(refs, row_values, strict=True)),
                dict(zip(views, row_stamps, strict=True)),
                row_stored,
            )
            for entity_id, row_values, row_stamps, row_stored in zip(
                entity_ids, zip(*values, strict=True), zip(*stamps, strict=True), stored, strict=True
            )
        ]


_LENGTH_HEADERS = np.array([b"$%d\r\n" % size for size in range(4_096)], dtype=object)


def _length_headers(values: list[bytes]) -> list[bytes]:
    """The RESP length header in front of each value, by table lookup (no per-value formatting)."""
    sizes = np.fromiter(map(len, values), dtype=np.intp, count=len(values))
    if len(values) and int(sizes.max()) >= len(_LENGTH_HEADERS):
        return [b"$%d\r\n" % size for size in sizes.tolist()]
    return cast("list[bytes]", _LENGTH_HEADERS[sizes].tolist())


def pack_hsets(project: str, rows: FeatureRows) -> tuple[bytes, int]:
    """The RESP bytes of every HSET (and EXPIRE) that writes `rows`, and how many commands they are."""
    count = len(rows)
    if count == 0:
        return b"", 0
    keys = encode_keys(rows.key, rows.entity_ids, project=project)
    # Feast's field order: the timestamp first, then the features.
    fields = [timestamp_field(rows.view)] + [feature_field(rows.view, column.name) for column in rows.columns]
    values = [encode_timestamps(rows.event_timestamps, count)]
    values += [encode_values(column.kind, column.values) for column in rows.columns]
    # Per row: HSET header + key, then (field, length header, value) triples, each value's CRLF opening
    # the next constant piece; constant pieces repeat, the others are one list per column.
    head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(fields))
    key_sizes = _length_headers(keys)
    parts: list[Iterable[bytes]] = [repeat(head, count), key_sizes, keys]
    for field, column_values in zip(fields, values, strict=True):
        parts += [repeat(b"\r\n" + _bulk(field), count), _length_headers(column_values), column_values]
    parts.append(repeat(b"\r\n", count))
    commands = count
    if rows.key_ttl_s:
        expire = b"*3\r\n$6\r\nEXPIRE\r\n"
        parts += [
            repeat(expire, count),
            key_sizes,
            keys,
            repeat(b"\r\n" + _bulk(b"%d" % rows.key_ttl_s), count),
        ]
        commands += count
    return b"".join(chain.from_iterable(zip(*parts))), commands  # noqa: B905 - repeat() is endless


def view_fields(view: ViewSpec) -> list[bytes]:
    """Every hash field of a view: its features and its `_ts`."""
    return [feature_field(view.name, f.name) for f in view.features] + [timestamp_field(view.name)]


def pack_hdels(
    project: str, key: EntityKey, entity_ids: npt.NDArray[Any] | Sequence[EntityId], fields: Sequence[bytes]
) -> bytes:
    """`HDEL <key> <fields...>` for every entity."""
    return b"".join(
        command(b"HDEL", redis_key, *fields) for redis_key in encode_keys(key, entity_ids, project=project)
    )
