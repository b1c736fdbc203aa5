"""The pure encoders produce exactly the bytes Feast's protobuf path produces (no I/O)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast import ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]  # no stubs installed

from core.online.encoding import (
    NULL_VALUE,
    encode_timestamp,
    encode_timestamps,
    encode_values,
    feature_field,
    timestamp_field,
    varint,
)
from core.online.keys import encode_entity_keys

_INT64_EDGES = sorted(
    {0, 1, -1, -(2**63), 2**63 - 1}
    | {sign * (2**bits + delta) for bits in range(63) for delta in (-1, 0, 1) for sign in (1, -1)}
)


def _feast(values: list[Any], value_type: Any) -> list[bytes]:
    """What Feast's materialization conversion (`python_values_to_proto_values`) serializes."""
    return [proto.SerializeToString() for proto in python_values_to_proto_values(values, value_type)]


def test_int64_values_match_protobuf() -> None:
    """int64: `0x20 <varint>` for every bit length, both signs and the extremes, from numpy and from lists."""
    expected = [Value(int64_val=v).SerializeToString() for v in _INT64_EDGES]
    assert encode_values("int64", np.array(_INT64_EDGES, dtype=np.int64)) == expected
    assert encode_values("int64", _INT64_EDGES) == expected
    assert encode_values("int64", np.array([0, 7, 2**63 - 1], dtype=np.uint64)) == _feast(
        [0, 7, 2**63 - 1], ValueType.INT64
    )
    with pytest.raises(OverflowError):
        encode_values("int64", np.array([2**63], dtype=np.uint64))


def test_int64_nulls_match_feast() -> None:
    """int64 nulls (None, NA, or NaN in a float column) are Feast's empty Value; floats truncate like int()."""
    values: list[Any] = [None, 5, -3, float("nan"), 2**40, pd.NA]
    assert encode_values("int64", values) == _feast(values, ValueType.INT64)
    floats = np.array([1.0, np.nan, -2.9, 2.9, 2.0**52])
    assert encode_values("int64", floats) == _feast(list(floats), ValueType.INT64)
    assert encode_values("int64", floats)[1] == NULL_VALUE == b""


def test_double_values_match_protobuf() -> None:
    """float64: `0x29 <f64 LE>` for specials and random bit patterns; NaN and None are nulls."""
    rng = np.random.default_rng(1)
    doubles = rng.integers(0, 2**63, size=2_000, dtype=np.int64).view(np.float64)
    doubles = doubles[~np.isnan(doubles)]
    specials = [0.0, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, 1.0 / 3, -2.5]
    values = np.concatenate([np.array(specials), doubles])
    assert encode_values("float64", values) == [Value(double_val=v).SerializeToString() for v in values]
    with_nulls: list[Any] = [1.5, None, float("nan"), np.nan, -0.0, 3]
    assert encode_values("float64", with_nulls) == [
        Value(double_val=1.5).SerializeToString(),
        b"",
        b"",
        b"",
        Value(double_val=-0.0).SerializeToString(),
        Value(double_val=3.0).SerializeToString(),
    ]
    assert encode_values("float64", np.array([1.0, np.nan], dtype=np.float32)) == _feast(
        [1.0, np.nan], ValueType.DOUBLE
    )


def test_string_values_match_protobuf() -> None:
    """string: `0x12 <varint len> <utf-8>` at every length boundary and for random unicode; None/NaN null."""
    rnd = random.Random(5)
    alphabet = "aZ09 é日本🙂\x00\n\"'\\"
    strings = ["", "a", "x" * 127, "x" * 128, "ü" * 64, "y" * 16_383, "y" * 16_384, "🙂" * 5_000]
    strings += ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(300))) for _ in range(500)]
    assert encode_values("string", strings) == [Value(string_val=s).SerializeToString() for s in strings]
    assert encode_values("string", np.array(strings, dtype=object)) == encode_values("string", strings)
    mixed: list[Any] = ["run-1", None, "run-1", float("nan"), 7, True, 1, "日本", pd.NA]
    assert encode_values("string", mixed) == _feast(mixed, ValueType.STRING)
    assert encode_values("string", np.array(["a", "bc"])) == _feast(["a", "bc"], ValueType.STRING)


def test_bool_values_match_protobuf() -> None:
    """bool: `0x38 <0|1>` from numpy bools or Python values; None and NA are nulls."""
    nullable = pd.array([True, None, False], dtype="boolean").to_numpy()  # object array holding pd.NA
    assert encode_values("bool", nullable) == [b"\x38\x01", b"", b"\x38\x00"]
    assert encode_values("bool", np.array([True, False, True])) == _feast([True, False, True], ValueType.BOOL)
    values: list[Any] = [True, None, False, np.True_, np.False_, pd.NA]
    assert encode_values("bool", values) == _feast(values, ValueType.BOOL)
    assert encode_values("bool", values)[1] == b""


def test_empty_columns_and_unknown_kind() -> None:
    """Zero rows give empty lists for every kind; an unknown kind is an error."""
    for kind in ("float64", "float32", "int64", "int32", "string", "bool"):
        assert encode_values(kind, np.array([])) == []
    assert encode_entity_keys(join_key="k", entity_ids=np.array([], dtype=np.int64), project="p") == []
    with pytest.raises(ValueError, match="unsupported"):
        encode_values("float16", [1.0])  # type: ignore[arg-type]  # the point of the test


def test_float32_values_match_protobuf() -> None:
    """float32: `0x35 <f32 LE>`, the double rounded to nearest as protobuf's float field does, for random
    doubles, float32 extremes, subnormals and values beyond float32's range; nulls as Feast writes them."""
    rng = np.random.default_rng(3)
    doubles = np.concatenate(
        [
            rng.normal(scale=1e3, size=1_000),
            rng.uniform(-1, 1, size=500) * 10.0 ** rng.integers(-45, 39, size=500),
            np.array(
                [0.0, -0.0, 0.1, 1 / 3, 1e-46, 1.4e-45, 3.4028234663852886e38, 3.4028235e38, 1e39, -1e300]
            ),
            np.array([math.inf, -math.inf]),
        ]
    )
    assert encode_values("float32", doubles) == [Value(float_val=v).SerializeToString() for v in doubles]
    with np.errstate(over="ignore"):
        singles = doubles.astype(np.float32)
    assert encode_values("float32", singles) == encode_values("float32", doubles)
    with_nulls: list[Any] = [1.5, None, float("nan"), np.float32(0.1), 2, pd.NA]
    assert encode_values("float32", with_nulls) == _feast(with_nulls, ValueType.FLOAT)
    assert encode_values("float32", [None, float("nan")]) == [NULL_VALUE, NULL_VALUE]


def test_int32_values_match_protobuf() -> None:
    """int32: `0x18 <varint>`, negatives sign-extended to 10 bytes as protobuf does, from numpy, lists and
    float columns; nulls as Feast writes them; a value outside int32 is an OverflowError, as in protobuf."""
    edges = [v for v in _INT64_EDGES if -(2**31) <= v < 2**31]
    expected = [Value(int32_val=v).SerializeToString() for v in edges]
    assert encode_values("int32", np.array(edges, dtype=np.int32)) == expected
    assert encode_values("int32", np.array(edges, dtype=np.int64)) == expected
    assert encode_values("int32", edges) == expected
    values: list[Any] = [None, 5, -3, float("nan"), 2**31 - 1, -(2**31), pd.NA]
    assert encode_values("int32", values) == _feast(values, ValueType.INT32)
    floats = np.array([1.0, np.nan, -2.9, 2.9, 2.0**31 - 1])
    assert encode_values("int32", floats) == _feast(list(floats), ValueType.INT32)
    for bad in ([2**31], [-(2**31) - 1], np.array([2**31], dtype=np.int64), np.array([2.0**31])):
        with pytest.raises(OverflowError, match="int32"):
            encode_values("int32", bad)
    with pytest.raises(OverflowError, match="int64"):
        encode_values("int64", np.array([2.0**63]))


def test_varint_matches_protobuf_uint64() -> None:
    """`varint` is protobuf's; negatives are 64-bit two's complement."""
    for value in _INT64_EDGES:
        assert b"\x20" + varint(value) == Value(int64_val=value).SerializeToString()


def test_timestamps_match_protobuf() -> None:
    """`encode_timestamp` equals `Timestamp(seconds, nanos)`, zero fields left out, negatives included."""
    cases = [(0, 0), (1, 0), (0, 1), (1_777_000_000, 123_456_000), (-1, 999_999_000), (-62135596800, 0)]
    cases += [(253402300799, 999_999_999), (2**31, 5), (-(2**40), 7)]
    for seconds, nanos in cases:
        assert encode_timestamp(seconds, nanos) == Timestamp(seconds=seconds, nanos=nanos).SerializeToString()


def _feast_timestamp(moment: datetime) -> bytes:
    """What Feast's writer stores: `Timestamp.FromDatetime(make_tzaware(ts))`."""
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return bytes(stamp.SerializeToString())


def test_timestamps_of_datetimes_and_datetime64() -> None:
    """Datetimes (naive = UTC, aware converted) and datetime64 (any unit, ns floored to µs) match Feast."""
    moments = [
        datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 30, 15, tzinfo=UTC).replace(tzinfo=None),  # naive means UTC
        datetime(2026, 5, 1, 14, 30, 15, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    ]
    for moment in moments:
        assert encode_timestamps(moment, 3) == [_feast_timestamp(moment)] * 3
    rng = np.random.default_rng(2)
    stamps = np.datetime64("2026-05-01T00:00:00", "ns") + rng.integers(0, 10**16, 1_000).astype("m8[ns]")
    stamps[:3] = stamps[3]  # repeats share one encoding
    expected = [_feast_timestamp(ts.to_pydatetime(warn=False)) for ts in pd.to_datetime(stamps)]
    assert encode_timestamps(stamps, len(stamps)) == expected
    for unit in ("s", "ms", "us"):
        coarse = stamps.astype(f"datetime64[{unit}]")
        assert encode_timestamps(coarse, len(coarse)) == [
            _feast_timestamp(ts.to_pydatetime()) for ts in pd.to_datetime(coarse)
        ]


def test_timestamp_arrays_match_protobuf_at_the_edges() -> None:
    """The vectorised encoding of datetime64 arrays equals `Timestamp(seconds, nanos)` per value: the epoch
    (both fields left out), whole seconds (nanos left out), before 1970 (negative seconds, floored), years
    1 and 9999, and many random microsecond times."""
    micros = [0, 1, 999_999, 1_000_000, -1, -1_000_000, -1_500_000, 1_777_000_000_123_456]
    micros += [-62_135_596_800_000_000, 253_402_300_799_999_999]
    micros += np.random.default_rng(3).integers(-(10**16), 10**16, 2_000).tolist()
    stamps = np.array(micros, dtype=np.int64).view("datetime64[us]")
    expected = [
        Timestamp(seconds=us // 1_000_000, nanos=us % 1_000_000 * 1000).SerializeToString() for us in micros
    ]
    assert encode_timestamps(stamps, len(stamps)) == expected


def test_bad_timestamps_are_rejected() -> None:
    """NaT, a non-datetime array or a length mismatch raise ValueError."""
    with pytest.raises(ValueError, match="NaT"):
        encode_timestamps(np.array(["NaT"], dtype="datetime64[ns]"), 1)
    with pytest.raises(ValueError, match="datetime64"):
        encode_timestamps(np.array([1, 2]), 2)
    with pytest.raises(ValueError, match="datetime64"):
        encode_timestamps(np.array(["2026-01-01"], dtype="datetime64[ns]"), 2)


def test_entity_keys_match_feast() -> None:
    """Keys equal `serialize_entity_key(v3) + project` and `_redis_key`, for small, large and negative ids."""
    ids = np.array([1, 0, -1, 255, 256, 2**31, 2**63 - 1, -(2**63), 1_234_567_890_123], dtype=np.int64)
    for join_key, project in [("customer_id", "tandem"), ("k", "p-ü"), ("日本", "x" * 40)]:
        keys = encode_entity_keys(join_key=join_key, entity_ids=ids, project=project)
        for entity_id, key in zip(ids.tolist(), keys, strict=True):
            proto = EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=entity_id)])
            assert key == serialize_entity_key(proto, entity_key_serialization_version=3) + project.encode()
            assert key == _redis_key(project, proto, entity_key_serialization_version=3)


def test_field_names_match_feast() -> None:
    """Feature fields are Feast's `_mmh3(f"{view}:{feature}")`; the timestamp field is `_ts:{view}`."""
    for view, feature in [("batch_predictions", "score"), ("v", "é日本"), ("a" * 100, "b"), ("x", "")]:
        assert feature_field(view, feature) == _mmh3(f"{view}:{feature}")
    assert timestamp_field("batch_predictions") == b"_ts:batch_predictions"
