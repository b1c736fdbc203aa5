"""Feast's Redis online-store bytes, computed without protobuf objects: keys, hash fields, values, timestamps.

Everything here is pure (no I/O) and mirrors Feast 0.67 byte for byte:

- key: `serialize_entity_key(EntityKey, entity_key_serialization_version=3) + project` — for one int64 join
  key `<u32 1><u32 STRING=2><u32 len><join key><u32 INT64=4><u32 8><i64 id>` (little-endian), then the
  project name in UTF-8;
- feature field: `_mmh3(f"{view}:{feature}")`, the 4 little-endian bytes of the unsigned murmur3_32 hash;
- timestamp field: `_ts:{view}`, holding a serialized `google.protobuf.Timestamp` (microsecond precision:
  Feast goes through `datetime`, so nanoseconds are floored away);
- value: a serialized `feast.types.Value` — double `0x29 <f64 LE>`, int64 `0x20 <varint>`, string
  `0x12 <varint len> <utf-8>`, bool `0x38 <0|1>`. A null (None, NaN) is an empty `Value`, i.e. `b""`.
"""

from __future__ import annotations

import calendar
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import mmh3
import numpy as np
import numpy.typing as npt

__all__ = [
    "NULL_VALUE",
    "FeatureColumn",
    "ValueKind",
    "encode_entity_keys",
    "encode_timestamp",
    "encode_timestamps",
    "encode_values",
    "entity_key_prefix",
    "feature_field",
    "timestamp_field",
    "varint",
]

ValueKind = Literal["float64", "int64", "string", "bool"]

NULL_VALUE = b""
"""What Feast stores for a null feature value: an empty `Value` message serializes to no bytes."""

_VALUE_TYPE_STRING = 2  # feast.types.ValueType.STRING
_VALUE_TYPE_INT64 = 4  # feast.types.ValueType.INT64
_TAG_INT64 = 0x20  # Value.int64_val = 4, varint
_TAG_DOUBLE = 0x29  # Value.double_val = 5, fixed64
_STRING_TAG = b"\x12"  # Value.string_val = 2, length-delimited
_BOOL_TRUE = b"\x38\x01"  # Value.bool_val = 7, varint
_BOOL_FALSE = b"\x38\x00"
_TS_SECONDS_TAG = b"\x08"  # Timestamp.seconds = 1, varint
_TS_NANOS_TAG = b"\x10"  # Timestamp.nanos = 2, varint
_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class FeatureColumn:
    """One feature's values for every row, in row order (a numpy array or a list); None, NA or NaN is null."""

    name: str
    kind: ValueKind
    values: npt.NDArray[Any] | Sequence[object]


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; a negative value is its 64-bit two's complement (10 bytes), as for int64."""
    if value < 0:
        value += _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def entity_key_prefix(join_key: str) -> bytes:
    """The bytes of a v3 serialized entity key with one int64 join key, up to (excluding) the id itself."""
    name = join_key.encode("utf-8")
    return (
        struct.pack("<III", 1, _VALUE_TYPE_STRING, len(name))
        + name
        + struct.pack("<II", _VALUE_TYPE_INT64, 8)
    )


def encode_entity_keys(*, join_key: str, entity_ids: npt.NDArray[np.int64], project: str) -> list[bytes]:
    """Feast's Redis key (`_redis_key`, serialization v3) for each id of a single int64 join key."""
    prefix = np.frombuffer(entity_key_prefix(join_key), dtype=np.uint8)
    suffix = np.frombuffer(project.encode("utf-8"), dtype=np.uint8)
    ids = np.ascontiguousarray(entity_ids, dtype="<i8")
    n, width = len(ids), len(prefix) + 8 + len(suffix)
    rows = np.empty((n, width), dtype=np.uint8)
    rows[:, : len(prefix)] = prefix
    rows[:, len(prefix) : len(prefix) + 8] = ids.view(np.uint8).reshape(n, 8)
    rows[:, len(prefix) + 8 :] = suffix
    return _row_bytes(rows)


def feature_field(view: str, feature: str) -> bytes:
    """The hash field of one feature of a view: Feast's `_mmh3(f"{view}:{feature}")`."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def timestamp_field(view: str) -> bytes:
    """The hash field holding a view's event timestamp: `_ts:{view}`."""
    return f"_ts:{view}".encode()


def encode_timestamp(seconds: int, nanos: int = 0) -> bytes:
    """A serialized `google.protobuf.Timestamp`; proto3 leaves out zero fields."""
    out = _TS_SECONDS_TAG + varint(seconds) if seconds else b""
    return out + _TS_NANOS_TAG + varint(nanos) if nanos else out


def _timestamp_of_datetime(moment: datetime) -> bytes:
    # Timestamp.FromDatetime: a naive datetime is UTC; an aware one is converted to UTC.
    return encode_timestamp(calendar.timegm(moment.utctimetuple()), moment.microsecond * 1000)


def encode_timestamps(event_timestamps: npt.NDArray[np.datetime64] | datetime, rows: int) -> list[bytes]:
    """The `_ts:` value for each row; naive datetime64 values are UTC and are floored to microseconds."""
    if isinstance(event_timestamps, datetime):
        return [_timestamp_of_datetime(event_timestamps)] * rows
    stamps = np.asarray(event_timestamps)
    if stamps.dtype.kind != "M" or len(stamps) != rows:
        raise ValueError(f"event_timestamps must be a datetime or {rows} datetime64 values")
    if np.isnat(stamps).any():
        raise ValueError("event_timestamps contains NaT")
    micros = stamps.astype("datetime64[ns]").astype(np.int64) // 1000
    unique, inverse = np.unique(micros, return_inverse=True)
    encoded = [encode_timestamp(int(us) // 1_000_000, int(us) % 1_000_000 * 1000) for us in unique.tolist()]
    return [encoded[i] for i in inverse.ravel().tolist()]


def encode_values(kind: ValueKind, values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    """The serialized `feast.types.Value` of each value; None and NaN give `NULL_VALUE`."""
    if kind == "float64":
        return _encode_doubles(values)
    if kind == "int64":
        return _encode_int64s(values)
    if kind == "string":
        return _encode_strings(values)
    if kind == "bool":
        return _encode_bools(values)
    raise ValueError(f"unsupported feature kind {kind!r}")


def _row_bytes(rows: npt.NDArray[np.uint8]) -> list[bytes]:
    """Each row of a C-contiguous 2-D uint8 array as one bytes object, without a Python-level loop."""
    if rows.shape[0] == 0:
        return []
    flat = np.ascontiguousarray(rows).view(f"V{rows.shape[1]}").ravel()
    return list(flat.tolist())


def _is_null(value: object) -> bool:
    """Null as Feast's `pd.isnull` sees a scalar: None, pandas' NA, a float NaN."""
    # pandas.NA is recognised by type name: the API must not import pandas just for this check.
    return (
        value is None or type(value).__name__ == "NAType" or (isinstance(value, float) and math.isnan(value))
    )


def _with_nulls(encoded: list[bytes], null: npt.NDArray[np.bool_]) -> list[bytes]:
    for i in np.flatnonzero(null).tolist():
        encoded[i] = NULL_VALUE
    return encoded


def _encode_doubles(values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    doubles = np.ascontiguousarray(np.asarray(values, dtype=np.float64), dtype="<f8")  # None -> NaN
    rows = np.empty((len(doubles), 9), dtype=np.uint8)
    rows[:, 0] = _TAG_DOUBLE
    rows[:, 1:] = doubles.view(np.uint8).reshape(-1, 8)
    return _with_nulls(_row_bytes(rows), np.isnan(doubles))


def _encode_int64s(values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and len(array) and int(array.max()) >= 1 << 63:
            raise OverflowError("int64 feature value out of range")
        return _varint_values(array.astype(np.int64))
    if array.dtype.kind == "f":
        null = np.isnan(array)
        ints = np.where(null, 0, array).astype(np.int64)  # int(x) truncates toward zero, as astype does
    else:
        items = array.tolist()
        null = np.fromiter((_is_null(v) for v in items), dtype=np.bool_, count=len(items))
        ints = np.array([0 if _is_null(v) else int(v) for v in items], dtype=np.int64)
    return _with_nulls(_varint_values(ints), null)


def _varint_values(ints: npt.NDArray[np.int64]) -> list[bytes]:
    """`0x20 <varint>` for each int64, vectorised: 7-bit groups, continuation bits, then a slice per value."""
    unsigned = ints.astype(np.int64).view(np.uint64)
    rows = np.empty((len(unsigned), 11), dtype=np.uint8)
    rows[:, 0] = _TAG_INT64
    lengths = np.ones(len(unsigned), dtype=np.int64)
    for k in range(10):
        shifted = unsigned >> np.uint64(7 * k)
        rows[:, k + 1] = (shifted & np.uint64(0x7F)).astype(np.uint8)
        if k:
            lengths += shifted != 0
    more = np.arange(10) < (lengths[:, None] - 1)
    rows[:, 1:] |= more.astype(np.uint8) << 7
    return [row[:size] for row, size in zip(_row_bytes(rows), (lengths + 1).tolist(), strict=True)]


def _encode_string(value: object) -> bytes:
    data = (value if isinstance(value, str) else str(value)).encode("utf-8")
    size = len(data)
    return (_STRING_TAG + bytes((size,)) if size < 0x80 else _STRING_TAG + varint(size)) + data


def _encode_strings(values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    items = values.tolist() if isinstance(values, np.ndarray) else values
    memo: dict[str, bytes] = {}  # repeated values (model version, run id) are encoded once
    out: list[bytes] = []
    append = out.append
    for value in items:
        if type(value) is str:
            encoded = memo.get(value)
            if encoded is None:
                encoded = memo[value] = _encode_string(value)
            append(encoded)
        else:  # Feast stores str(value) for anything that is not null
            append(NULL_VALUE if _is_null(value) else _encode_string(value))
    return out


def _encode_bools(values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    if isinstance(values, np.ndarray) and values.dtype == np.bool_:
        return [_BOOL_TRUE if v else _BOOL_FALSE for v in values.tolist()]
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return [NULL_VALUE if _is_null(v) else _BOOL_TRUE if bool(v) else _BOOL_FALSE for v in items]
