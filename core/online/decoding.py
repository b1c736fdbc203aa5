"""Feast's Redis online-store values, decoded without protobuf: `feast.types.Value` scalars and Timestamps.

The inverse of `core.online.encoding`, pure (no I/O), and equal to protobuf's own parsing for every input
Tandem can meet:

- a `Value` holds one field of its `val` oneof; the scalars decoded here are string (2), int32 (3),
  int64 (4), double (5), float (6) and bool (7). An empty `Value` (`b""`, Feast's null) and `null_val`
  (19) give None. As protobuf does, the last oneof field wins, fields of unknown numbers (or with a wire
  type their number doesn't have) are skipped, int32/int64 keep the low 32/64 bits of the varint, a bool is
  any non-zero varint, and a string must be valid UTF-8. Any other member of the oneof (bytes, lists, maps,
  timestamps...) raises ValueError, as does a truncated or malformed message;
- a `google.protobuf.Timestamp` has seconds (1) and nanos (2), either absent meaning 0; it becomes an aware
  UTC datetime with nanos floored to microseconds, which is what `Timestamp.ToDatetime` gives and what
  Feast's reader returns for the microsecond timestamps Feast writes. A timestamp `ToDatetime` rejects
  (nanos outside [0, 1e9), a date outside years 1-9999) raises ValueError.

The common shapes (one field, minimal varint) take a fast path; anything else goes through a general walk.
`value_decoder(kind)` picks the fastest equivalent for a feature kind (ints and strings repeat across
entities and are memoized). `decode_snapshot` parses a stored score's `feature_snapshot_ts` JSON.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

__all__ = [
    "Decoder",
    "Scalar",
    "decode_snapshot",
    "decode_timestamp",
    "decode_value",
    "value_decoder",
]

Scalar = float | int | str | bool | None
"""A decoded feature value; None is null."""

Decoder = Callable[[bytes | None], Scalar]
"""Decodes one serialized Value (None for a missing field)."""

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_unpack_double = _DOUBLE.unpack_from
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_U64 = (1 << 64) - 1

# Value fields: number -> (wire type, kind). Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
_STRING, _INT32, _INT64, _DOUBLE_KIND, _FLOAT_KIND, _BOOL, _NULL = range(7)
_SCALARS: dict[int, tuple[int, int]] = {
    2: (2, _STRING),
    3: (0, _INT32),
    4: (0, _INT64),
    5: (1, _DOUBLE_KIND),
    6: (5, _FLOAT_KIND),
    7: (0, _BOOL),
    19: (0, _NULL),  # null_val (an enum)
}
# Other members of the `val` oneof and their wire types: present last, they are a value Tandem can't read.
# unix_timestamp_val (8) is a varint; bytes, json, uuid, decimal and every list, set or map are length-delimited.
_UNSUPPORTED: dict[int, int] = {8: 0} | dict.fromkeys((1, *range(11, 19), *range(20, 30), *range(32, 49)), 2)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint at `pos`: (value masked to 64 bits, position after it); at most 10 bytes."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _signed(value: int, bits: int) -> int:
    """Two's complement of the low `bits` bits."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _skip(data: bytes, pos: int, wire: int) -> int:
    """The position after an unknown field's payload of wire type `wire`."""
    if wire == 0:
        return _varint(data, pos)[1]
    if wire == 1:
        end = pos + 8
    elif wire == 5:
        end = pos + 4
    elif wire == 2:
        size, pos = _varint(data, pos)
        end = pos + size
    else:
        raise ValueError(f"unsupported protobuf wire type {wire}")
    if end > len(data):
        raise ValueError("truncated field")
    return end


def _scalar(data: bytes, pos: int, kind: int) -> tuple[Scalar, int]:
    """One scalar field's value at `pos` (after its tag) and the position after it."""
    if kind in (_DOUBLE_KIND, _FLOAT_KIND):
        codec = _DOUBLE if kind == _DOUBLE_KIND else _FLOAT
        end = pos + codec.size
        if end > len(data):
            raise ValueError("truncated fixed-width value")
        return codec.unpack_from(data, pos)[0], end
    if kind == _STRING:
        size, pos = _varint(data, pos)
        end = pos + size
        if end > len(data):
            raise ValueError("truncated string")
        return data[pos:end].decode("utf-8"), end
    number, end = _varint(data, pos)
    if kind == _INT64:
        return _signed(number, 64), end
    if kind == _INT32:
        return _signed(number, 32), end
    if kind == _BOOL:
        return number != 0, end
    return None, end  # null_val


def _decode_general(data: bytes) -> Scalar:
    """Walk every field; the last member of the oneof wins."""
    value: Scalar = None
    unsupported: int | None = None
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("invalid protobuf field number 0")
        scalar = _SCALARS.get(number)
        if scalar is not None and scalar[0] == wire:
            value, pos = _scalar(data, pos, scalar[1])
            unsupported = None
            continue
        if _UNSUPPORTED.get(number) == wire:
            unsupported = number
            value = None
        pos = _skip(data, pos, wire)
    if unsupported is not None:
        raise ValueError(f"feast Value field {unsupported} is not a scalar Tandem reads")
    return value


def decode_value(data: bytes | None) -> Scalar:
    """The Python value of a serialized `feast.types.Value`; None for a null (`b""`) or a missing field."""
    if not data:
        return None
    tag = data[0]
    size = len(data)
    if tag == 0x29 and size == 9:
        double: float = _unpack_double(data, 1)[0]
        return double
    if tag == 0x20:
        if size == 2 and data[1] < 0x80:
            return data[1]
        number, pos = _varint(data, 1)
        if pos == size:
            return _signed(number, 64)
    elif tag == 0x12:
        if size >= 2 and data[1] < 0x80 and size == data[1] + 2:
            return data[2:].decode("utf-8")
    elif tag == 0x38 and size == 2 and data[1] < 0x80:
        return data[1] != 0
    return _decode_general(data)


def _decode_double(data: bytes | None) -> Scalar:
    """`decode_value` with the float64 shape tested first."""
    if data and len(data) == 9 and data[0] == 0x29:
        double: float = _unpack_double(data, 1)[0]
        return double
    return decode_value(data)


_unpack_float = _FLOAT.unpack_from


def _decode_float(data: bytes | None) -> Scalar:
    """`decode_value` with the float32 shape (`0x35 <f32>`) tested first; the float is exact in a double."""
    if data and len(data) == 5 and data[0] == 0x35:
        single: float = _unpack_float(data, 1)[0]
        return single
    return decode_value(data)


_MEMO: dict[bytes, Scalar] = {}
_MEMO_SIZE = 65_536


def _decode_memoized(data: bytes | None) -> Scalar:
    """`decode_value` through a bounded memo: ints, strings and bools repeat across entities."""
    if not data:
        return None
    try:
        return _MEMO[data]
    except KeyError:
        value = decode_value(data)
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[data] = value
    return value


def value_decoder(kind: str) -> Decoder:
    """The fastest decoder for a feature of `kind` (float64, float32, int64, int32, string, bool); each equals
    `decode_value` for any input, the kind only picks which shape to expect."""
    if kind == "float64":
        return _decode_double
    return _decode_float if kind == "float32" else _decode_memoized


@lru_cache(maxsize=16_384)
def decode_timestamp(data: bytes) -> datetime:
    """The aware UTC datetime of a serialized `google.protobuf.Timestamp`, nanos truncated to microseconds.

    Cached: a view's rows often share timestamps (every stored prediction of a run has the same one).
    """
    seconds = nanos = 0
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        if tag == 0x08:
            number, pos = _varint(data, pos)
            seconds = _signed(number, 64)
        elif tag == 0x10:
            number, pos = _varint(data, pos)
            nanos = _signed(number, 32)
        elif tag >> 3 == 0:
            raise ValueError("invalid protobuf field number 0")
        else:
            pos = _skip(data, pos, tag & 7)
    if not 0 <= nanos < 1_000_000_000:
        raise ValueError(f"timestamp nanos out of range: {nanos}")
    try:
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise ValueError(f"timestamp seconds out of range: {seconds}") from None


@lru_cache(maxsize=4_096)
def _snapshot_items(text: str) -> tuple[tuple[str, datetime | None], ...] | None:
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return None
        items: list[tuple[str, datetime | None]] = []
        for view, stamp in data.items():
            if stamp is None:
                items.append((view, None))
                continue
            moment = datetime.fromisoformat(stamp)  # a non-string raises TypeError
            items.append((view, moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)))
    except (ValueError, TypeError):
        return None
    return tuple(items)


def decode_snapshot(text: str) -> dict[str, datetime | None] | None:
    """A stored score's `feature_snapshot_ts` JSON ({view: ISO time or null}) with aware UTC times (naive
    means UTC), or None when the text is not such an object. Cached: a run's rows share a few snapshots."""
    items = _snapshot_items(text)
    return None if items is None else dict(items)
