"""Feast's Redis online-store bytes, computed without protobuf objects: hash fields, values, timestamps.

Everything here is pure (no I/O) and mirrors Feast 0.67 byte for byte:

- key: Feast's serialized entity key + project, in `core.online.keys`;
- feature field: `_mmh3(f"{view}:{feature}")`, the 4 little-endian bytes of the unsigned murmur3_32 hash;
- timestamp field: `_ts:{view}`, holding a serialized `google.protobuf.Timestamp` (microsecond precision:
  Feast goes through `datetime`, so nanoseconds are floored away);
- value: a serialized `feast.types.Value` — double `0x29 <f64 LE>`, float `0x35 <f32 LE>` (rounded to
  nearest, as protobuf stores a Float32), int64 `0x20 <varint>`, int32 `0x18 <varint>` (negative: the
  10-byte sign extension), string `0x12 <varint len> <utf-8>`, bool `0x38 <0|1>`. A null (None, NaN) is
  an empty `Value`, i.e. `b""`.
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
    "INT_BOUNDS",
    "NULL_VALUE",
    "FeatureColumn",
    "ValueKind",
    "encode_timestamp",
    "encode_timestamps",
    "encode_values",
    "feature_field",
    "row_bytes",
    "timestamp_field",
    "varint",
]

ValueKind = Literal["float64", "float32", "int64", "int32", "string", "bool"]

NULL_VALUE = b""
"""What Feast stores for a null feature value: an empty `Value` message serializes to no bytes."""

_TAG_INT32 = 0x18  # Value.int32_val = 3, varint
_TAG_INT64 = 0x20  # Value.int64_val = 4, varint
_TAG_DOUBLE = 0x29  # Value.double_val = 5, fixed64
_TAG_FLOAT = 0x35  # Value.float_val = 6, fixed32
INT_BOUNDS = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}
"""The range of Feast's int64 and int32 values (feature values and entity keys)."""
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


_TS_MIN_US = -62_135_596_800 * 1_000_000  # 0001-01-01T00:00:00Z
_TS_MAX_US = 253_402_300_800 * 1_000_000 - 1  # 9999-12-31T23:59:59.999999Z


def encode_timestamps(event_timestamps: npt.NDArray[np.datetime64] | datetime, rows: int) -> list[bytes]:
    """The `_ts:` value for each row; naive datetime64 values are UTC and are floored to microseconds."""
    if isinstance(event_timestamps, datetime):
        return [_timestamp_of_datetime(event_timestamps)] * rows
    stamps = np.asarray(event_timestamps)
    if stamps.dtype.kind != "M" or len(stamps) != rows:
        raise ValueError(f"event_timestamps must be a datetime or {rows} datetime64 values")
    if np.isnat(stamps).any():
        raise ValueError("event_timestamps contains NaT")
    micros = stamps.astype("datetime64[us]").astype(np.int64)  # floors; ns would wrap past 2262
    if len(micros) and (micros.min() < _TS_MIN_US or micros.max() > _TS_MAX_US):
        raise ValueError("event_timestamps outside years 1-9999 (what a protobuf Timestamp holds)")
    seconds, micros_left = np.divmod(micros, 1_000_000)  # floor division: nanos stay in [0, 1e9)
    # proto3 leaves out a zero field: `_varint_values` gives tag + varint, blanked where the value is 0
    with_seconds = _with_nulls(_varint_values(seconds, _TS_SECONDS_TAG[0]), seconds == 0)
    with_nanos = _with_nulls(_varint_values(micros_left * 1000, _TS_NANOS_TAG[0]), micros_left == 0)
    return list(map(bytes.__add__, with_seconds, with_nanos))


def encode_values(kind: ValueKind, values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    """The serialized `feast.types.Value` of each value; None and NaN give `NULL_VALUE`."""
    if kind == "float64":
        return _encode_doubles(values)
    if kind == "float32":
        return _encode_floats(values)
    if kind == "int64":
        return _encode_ints(values, "int64")
    if kind == "int32":
        return _encode_ints(values, "int32")
    if kind == "string":
        return _encode_strings(values)
    if kind == "bool":
        return _encode_bools(values)
    raise ValueError(f"unsupported feature kind {kind!r}")


def row_bytes(rows: npt.NDArray[np.uint8]) -> list[bytes]:
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


def _as_doubles(values: npt.NDArray[Any] | Sequence[object]) -> npt.NDArray[np.float64]:
    """float64 values, NaN for every null (None, NA, NaN)."""
    array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if array.dtype.kind in "fiub":
        return array.astype(np.float64)
    return np.array([math.nan if _is_null(v) else float(v) for v in array.tolist()], dtype=np.float64)


def _encode_doubles(values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    doubles = np.ascontiguousarray(_as_doubles(values), dtype="<f8")
    rows = np.empty((len(doubles), 9), dtype=np.uint8)
    rows[:, 0] = _TAG_DOUBLE
    rows[:, 1:] = doubles.view(np.uint8).reshape(-1, 8)
    return _with_nulls(row_bytes(rows), np.isnan(doubles))


def _encode_floats(values: npt.NDArray[Any] | Sequence[object]) -> list[bytes]:
    doubles = _as_doubles(values)
    with np.errstate(over="ignore"):  # beyond float32's range: infinity, as protobuf's float field gives
        floats = np.ascontiguousarray(doubles, dtype="<f4")
    rows = np.empty((len(floats), 5), dtype=np.uint8)
    rows[:, 0] = _TAG_FLOAT
    rows[:, 1:] = floats.view(np.uint8).reshape(-1, 4)
    return _with_nulls(row_bytes(rows), np.isnan(doubles))


def _encode_ints(values: npt.NDArray[Any] | Sequence[object], kind: Literal["int64", "int32"]) -> list[bytes]:
    array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    low, high = INT_BOUNDS[kind]
    tag = _TAG_INT64 if kind == "int64" else _TAG_INT32
    if array.dtype.kind in "iu":
        if len(array) and (int(array.min()) < low or int(array.max()) > high):
            raise OverflowError(f"{kind} feature value out of range")
        return _varint_values(array.astype(np.int64), tag)
    if array.dtype.kind == "f":
        null = np.isnan(array)
        whole = np.trunc(np.where(null, 0, array))  # int(x) truncates toward zero, as astype does
        if np.any((whole < float(low)) | (whole >= float(high) + 1)):
            raise OverflowError(f"{kind} feature value out of range")
        return _with_nulls(_varint_values(whole.astype(np.int64), tag), null)
    items = array.tolist()
    null = np.fromiter((_is_null(v) for v in items), dtype=np.bool_, count=len(items))
    ints = [0 if _is_null(v) else int(v) for v in items]
    if ints and (min(ints) < low or max(ints) > high):
        raise OverflowError(f"{kind} feature value out of range")
    return _with_nulls(_varint_values(np.array(ints, dtype=np.int64), tag), null)


def _varint_values(ints: npt.NDArray[np.int64], tag: int = _TAG_INT64) -> list[bytes]:
    """`<tag> <varint>` for each int, vectorised: 7-bit groups, continuation bits, then a slice per value."""
    unsigned = ints.astype(np.int64).view(np.uint64)
    rows = np.empty((len(unsigned), 11), dtype=np.uint8)
    rows[:, 0] = tag
    lengths = np.ones(len(unsigned), dtype=np.int64)
    for k in range(10):
        shifted = unsigned >> np.uint64(7 * k)
        rows[:, k + 1] = (shifted & np.uint64(0x7F)).astype(np.uint8)
        if k:
            lengths += shifted != 0
    more = np.arange(10) < (lengths[:, None] - 1)
    rows[:, 1:] |= more.astype(np.uint8) << 7
    return [row[:size] for row, size in zip(row_bytes(rows), (lengths + 1).tolist(), strict=True)]


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
