"""The pure decoders read Feast's Redis bytes exactly as protobuf (and Feast's reader) does (no I/O)."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import NULL, Value
from google.protobuf import message_factory  # type: ignore[import-untyped]  # no stubs installed
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # no stubs installed
from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]  # no stubs installed

from core.online.decoding import decode_snapshot, decode_timestamp, decode_value, value_decoder
from core.online.encoding import encode_timestamp, encode_timestamps, encode_values, varint

_INT64_EDGES = sorted(
    {0, 1, -1, -(2**63), 2**63 - 1}
    | {sign * (2**bits + delta) for bits in range(63) for delta in (-1, 0, 1) for sign in (1, -1)}
)
_INT32_EDGES = [v for v in _INT64_EDGES if -(2**31) <= v < 2**31]
_SCALAR_FIELDS = {"string_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val"}


def _protobuf(data: bytes) -> Any:
    """What protobuf parses: the Python value of the oneof, None for none or null_val, or the exception."""
    try:
        message = Value.FromString(data)
    except DecodeError as error:
        return error
    which = message.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    if which not in _SCALAR_FIELDS:
        return NotImplementedError(which)
    return getattr(message, which)


def _same(ours: Any, theirs: Any) -> bool:
    """Equal values of equal types; NaNs are equal, and the sign of zero counts."""
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, float):
        return (math.isnan(ours) and math.isnan(theirs)) or (
            ours == theirs and math.copysign(1, ours) == math.copysign(1, theirs)
        )
    return bool(ours == theirs)


def _check(data: bytes) -> None:
    """`decode_value` agrees with protobuf: same value, or ValueError where protobuf fails or isn't scalar."""
    expected = _protobuf(data)
    if isinstance(expected, Exception):
        with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: malformed or unsupported
            decode_value(data)
    else:
        assert _same(decode_value(data), expected), (data, expected)


def test_doubles_match_protobuf() -> None:
    """double: specials, signed zeros, subnormals, NaN payloads and random bit patterns."""
    rng = np.random.default_rng(3)
    doubles = rng.integers(0, 2**64, size=3_000, dtype=np.uint64).view(np.float64).tolist()
    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 1.7976931348623157e308, 1 / 3]
    for value in specials + doubles:
        data = Value(double_val=value).SerializeToString()
        assert _same(decode_value(data), Value.FromString(data).double_val)


def test_floats_match_protobuf() -> None:
    """float (Float32 features): decoded to the Python float of the float32, as protobuf gives it."""
    rng = np.random.default_rng(4)
    floats = rng.integers(0, 2**32, size=3_000, dtype=np.uint64).astype(np.uint32).view(np.float32).tolist()
    for value in [0.0, -0.0, math.inf, -math.inf, 1e-45, 3.4028234663852886e38, 0.1, *floats]:
        data = Value(float_val=value).SerializeToString()
        _check(data)
        assert isinstance(decode_value(data), float)


def test_integers_match_protobuf() -> None:
    """int64 and int32 at every bit length, both signs and the extremes (negatives are 10-byte varints)."""
    for value in _INT64_EDGES:
        data = Value(int64_val=value).SerializeToString()
        assert decode_value(data) == value
        _check(data)
    for value in _INT32_EDGES:
        data = Value(int32_val=value).SerializeToString()
        assert decode_value(data) == value
        _check(data)


def test_strings_and_bools_match_protobuf() -> None:
    """string at every length boundary and random unicode; bool both ways; all as protobuf parses them."""
    rnd = random.Random(6)
    alphabet = "aZ09 é日本🙂\x00\n\"'\\"
    strings = ["", "a", "x" * 127, "x" * 128, "ü" * 64, "y" * 16_383, "y" * 16_384, "🙂" * 5_000]
    strings += ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(300))) for _ in range(500)]
    for text in strings:
        data = Value(string_val=text).SerializeToString()
        assert decode_value(data) == text
        _check(data)
    assert decode_value(Value(bool_val=True).SerializeToString()) is True
    assert decode_value(Value(bool_val=False).SerializeToString()) is False


def test_nulls_are_none() -> None:
    """An empty Value (Feast's null), a missing field (None from HMGET) and null_val all decode to None."""
    assert decode_value(b"") is None
    assert decode_value(None) is None
    assert decode_value(Value(null_val=NULL).SerializeToString()) is None


def test_roundtrip_with_our_encoder() -> None:
    """decode_value(encode_values(kind, xs)) gives xs back, nulls as None, for every kind."""
    rng = np.random.default_rng(8)
    doubles = [*rng.normal(size=500).tolist(), None, -0.0, math.inf]
    assert [decode_value(v) for v in encode_values("float64", doubles)] == doubles
    assert [decode_value(v) for v in encode_values("int64", [*_INT64_EDGES, None])] == [*_INT64_EDGES, None]
    strings = ["", "run-1", "日本" * 100, None, '{"customer_profile":null}']
    assert [decode_value(v) for v in encode_values("string", strings)] == strings
    bools = [True, False, None]
    assert [decode_value(v) for v in encode_values("bool", bools)] == bools
    singles: list[float | None] = [float(v) for v in rng.normal(size=200).astype(np.float32).tolist()]
    singles += [None, -0.0, math.inf, 3.4028234663852886e38]
    assert [decode_value(v) for v in encode_values("float32", singles)] == singles
    assert [decode_value(v) for v in encode_values("int32", [*_INT32_EDGES, None])] == [*_INT32_EDGES, None]


def _field(rnd: random.Random) -> bytes:
    """One random wire field of a Value: scalars (some with overlong varints), nulls, unknown or mistyped
    fields, and non-scalar members of the oneof."""
    choice = rnd.randrange(12)
    if choice == 0:
        return b"\x29" + struct.pack("<d", rnd.uniform(-1e9, 1e9))
    if choice == 1:
        return b"\x35" + struct.pack("<f", rnd.uniform(-1e3, 1e3))
    if choice == 2:
        return b"\x20" + varint(rnd.choice(_INT64_EDGES))
    if choice == 3:
        return b"\x18" + varint(rnd.choice(_INT64_EDGES))  # an int64 in int32: low 32 bits
    if choice == 4:
        text = "".join(rnd.choice("aé🙂") for _ in range(rnd.randrange(5))).encode()
        return b"\x12" + varint(len(text)) + text
    if choice == 5:
        return b"\x38" + varint(rnd.choice([0, 1, 2, 300, -1]))  # any non-zero varint is True
    if choice == 6:  # overlong (non-minimal) varint: padded with 0x80 continuation bytes
        value = rnd.randrange(100)
        return b"\x20" + bytes([(value & 0x7F) | 0x80] + [0x80] * rnd.randrange(1, 8) + [0])
    if choice == 7:
        return b"\xa8\x01\x00"  # null_val = NULL_VALUE
    if choice == 8:  # unknown field numbers, all wire types
        number = rnd.choice([9, 10, 30, 31, 60, 1000])
        payloads = [varint(rnd.randrange(1 << 20)), bytes(8), b"\x03abc", bytes(4)]
        wire = rnd.choice([0, 1, 2, 5])
        return varint(number << 3 | wire) + payloads[[0, 1, 2, 5].index(wire)]
    if choice == 9:  # a scalar field number with the wrong wire type: protobuf keeps it as unknown
        return rnd.choice([b"\x2a\x00", b"\x22\x01x", b"\x15\x00\x00\x00\x00", b"\x3a\x00", b"\x10\x01"])
    if choice == 10:  # non-scalar members: bytes, int64 list, unix timestamp, json
        return rnd.choice([b"\x0a\x02ab", b"\x72\x02\x08\x01", b"\x40\x05", b"\x82\x02\x02{}"])
    return b""


def test_kind_decoders_equal_decode_value() -> None:
    """`value_decoder(kind)` gives what `decode_value` gives, for every kind and any input (the memo too,
    asked twice), and raises where it raises."""
    rnd = random.Random(12)
    samples: list[bytes | None] = [
        None,
        b"",
        *(b"".join(_field(rnd) for _ in range(2)) for _ in range(3_000)),
    ]
    samples += encode_values("float64", [1.5, -0.0]) + encode_values("int64", _INT64_EDGES)
    samples += encode_values("float32", [1.5, -0.0, 0.1, None]) + encode_values("int32", _INT32_EDGES)
    for kind in ("float64", "float32", "int64", "int32", "string", "bool"):
        decoder = value_decoder(kind)
        for data in samples * 2:
            try:
                expected = decode_value(data)
            except ValueError:
                with pytest.raises(ValueError):  # noqa: PT011 - whatever decode_value raised
                    decoder(data)
                continue
            assert _same(decoder(data), expected), (kind, data)


def test_snapshots() -> None:
    """`feature_snapshot_ts` JSON: ISO times to aware UTC (offsets converted, naive = UTC), nulls kept;
    anything but an object of strings or nulls is None."""
    parsed = decode_snapshot('{"a":"2026-05-01T12:00:00.000001+02:00","b":null,"c":"2026-05-01T00:00:00"}')
    assert parsed == {
        "a": datetime(2026, 5, 1, 10, 0, 0, 1, tzinfo=UTC),
        "b": None,
        "c": datetime(2026, 5, 1, tzinfo=UTC),
    }
    assert parsed is not None
    assert all(v is None or v.tzinfo is UTC for v in parsed.values())
    assert decode_snapshot("{}") == {}
    for bad in ["", "null", "[]", '{"a": 1}', '{"a": "soon"}', "{", '"2026-05-01T00:00:00"']:
        assert decode_snapshot(bad) is None, bad
    first = decode_snapshot('{"a":null}')
    assert first is not None
    first["a"] = NOW_SENTINEL
    assert decode_snapshot('{"a":null}') == {"a": None}  # each call gets its own dict


NOW_SENTINEL = datetime(2000, 1, 1, tzinfo=UTC)


def test_random_messages_match_protobuf() -> None:
    """Random sequences of fields: the last oneof member wins, unknown and mistyped fields are skipped,
    non-scalars and truncated bytes raise ValueError — wherever protobuf does the same."""
    rnd = random.Random(9)
    for _ in range(20_000):
        data = b"".join(_field(rnd) for _ in range(rnd.randrange(1, 4)))
        _check(data[: rnd.randrange(len(data))] if data and rnd.random() < 0.1 else data)  # some truncated


def test_ten_byte_varints_keep_the_low_64_bits() -> None:
    """A 10th varint byte above 1 overflows 64 bits: protobuf drops the excess bits, and so do we."""
    for data in [
        b"\x20" + b"\xff" * 9 + b"\x7f",
        b"\x18" + b"\xff" * 9 + b"\x01",
        b"\x38" + b"\x80" * 9 + b"\x02",
    ]:
        _check(data)
    assert decode_value(b"\x20" + b"\xff" * 9 + b"\x7f") == -1
    assert decode_value(b"\x38" + b"\x80" * 9 + b"\x02") is False


def test_malformed_values_raise() -> None:
    """Truncated fields, over-long varints, invalid UTF-8 and field number 0 raise ValueError, as protobuf
    refuses them; every prefix of valid messages is checked against protobuf too."""
    bad = [b"\x29\x00", b"\x12\x05abc", b"\x20" + b"\xff" * 11, b"\x20\xff", b"\x12\x02\xc3\x28", b"\x00\x01"]
    for data in bad:
        assert isinstance(_protobuf(data), DecodeError), data
        with pytest.raises(ValueError):  # noqa: PT011 - each is a different message
            decode_value(data)
    valid = [Value(int64_val=-5), Value(string_val="héllo"), Value(double_val=2.5)]
    for data in [message.SerializeToString() for message in valid]:
        for end in range(1, len(data)):
            _check(data[:end])


@pytest.mark.parametrize("field", [f.name for f in Value.DESCRIPTOR.fields])
def test_every_value_field(field: str) -> None:
    """Each member of Value's oneof, set to a sample: scalars decode, null_val is None, the rest raise."""
    samples: dict[str, Callable[[], Value]] = {
        "string_val": lambda: Value(string_val="s"),
        "int32_val": lambda: Value(int32_val=-7),
        "int64_val": lambda: Value(int64_val=-7),
        "double_val": lambda: Value(double_val=1.5),
        "float_val": lambda: Value(float_val=1.5),
        "bool_val": lambda: Value(bool_val=True),
        "null_val": lambda: Value(null_val=NULL),
    }
    message = samples[field]() if field in samples else Value(**{field: _sample_of(field)})
    data = message.SerializeToString()
    if field in samples:
        assert _same(decode_value(data), _protobuf(data))
    else:
        with pytest.raises(ValueError, match="not a scalar"):
            decode_value(data)


def _sample_of(field: str) -> Any:
    """A value for a non-scalar Value field: an empty message (still serialized: it sets the oneof),
    bytes, a string (json, uuid, decimal) or an int (unix_timestamp_val)."""
    descriptor = Value.DESCRIPTOR.fields_by_name[field]
    if descriptor.message_type is not None:
        return message_factory.GetMessageClass(descriptor.message_type)()
    return {descriptor.TYPE_BYTES: b"x", descriptor.TYPE_STRING: "x"}.get(descriptor.type, 5)


_SECONDS_RANGE = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 .. 9999-12-31T23:59:59


def test_timestamps_match_protobuf() -> None:
    """Timestamp: random seconds over the whole valid range and nanos, either absent, equal ToDatetime(UTC)."""
    rnd = random.Random(10)
    cases = [
        (0, 0),
        (1, 0),
        (0, 1),
        (0, 999),
        (0, 1_000),
        (-1, 999_999_999),
        (_SECONDS_RANGE[0], 0),
        (_SECONDS_RANGE[1], 999_999_999),
    ]
    cases += [(rnd.randint(*_SECONDS_RANGE), rnd.randrange(1_000_000_000)) for _ in range(5_000)]
    cases += [(rnd.randint(0, 4_102_444_800), rnd.randrange(1_000_000) * 1000) for _ in range(5_000)]
    for seconds, nanos in cases:
        data = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
        moment = decode_timestamp(data)
        assert moment == Timestamp.FromString(data).ToDatetime(tzinfo=UTC)
        assert moment.tzinfo is UTC
        assert decode_timestamp(encode_timestamp(seconds, nanos)) == moment


def test_timestamps_equal_feasts_reader() -> None:
    """For the microsecond timestamps Feast writes, the result equals Feast's reader
    (`datetime.fromtimestamp(seconds + nanos / 1e9, UTC)`) and roundtrips our encoder."""
    rng = np.random.default_rng(11)
    stamps = np.datetime64("1971-01-01", "us") + rng.integers(0, 4 * 10**15, 5_000).astype("m8[us]")
    for data, stamp in zip(encode_timestamps(stamps, len(stamps)), stamps.tolist(), strict=True):
        message = Timestamp.FromString(data)
        feast = datetime.fromtimestamp(message.seconds + message.nanos / 1_000_000_000.0, tz=UTC)
        assert decode_timestamp(data) == feast == stamp.replace(tzinfo=UTC)


def test_timestamp_wire_variations() -> None:
    """Fields in any order, repeated (last wins), unknown fields skipped: as protobuf parses them."""
    seconds, nanos = b"\x08" + varint(1_777_000_000), b"\x10" + varint(5_000)
    for data in [nanos + seconds, seconds + nanos + b"\x08" + varint(7), b"\x18\x01" + seconds, b"", nanos]:
        assert decode_timestamp(data) == Timestamp.FromString(data).ToDatetime(tzinfo=UTC)
    assert decode_timestamp(b"") == datetime(1970, 1, 1, tzinfo=UTC)
    assert decode_timestamp(b"\x10" + varint(2_000)) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        microseconds=2
    )


def test_invalid_timestamps_raise() -> None:
    """Out-of-range nanos or seconds, truncation and bad tags raise ValueError (ToDatetime refuses them too)."""
    for seconds, nanos in [
        (0, -1),
        (0, 1_000_000_000),
        (_SECONDS_RANGE[1] + 1, 0),
        (_SECONDS_RANGE[0] - 1, 0),
    ]:
        data = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
        with pytest.raises(ValueError):  # noqa: PT011 - protobuf raises ValueError as well
            Timestamp.FromString(data).ToDatetime(tzinfo=UTC)
        with pytest.raises(ValueError, match="out of range"):
            decode_timestamp(data)
    for data in [b"\x08", b"\x08\xff", b"\x00\x00", b"\x0f"]:
        with pytest.raises(ValueError):  # noqa: PT011 - each is a different message
            decode_timestamp(data)
