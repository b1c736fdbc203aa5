"""Batch and live hand the model the same input, bit for bit, for every Feast scalar feature type (no I/O).

Batch: the offline value as PostgreSQL's `::float8` gives it (bools through `::int4`), then `batch_input`.
Live: the value Feast's materialization writes online (`python_values_to_proto_values`, or our own encoder
for a push), decoded from its bytes, then `live_input`. Strings stay strings on both sides.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from feast import ValueType
from feast.type_map import python_values_to_proto_values

from core.features.inputs import NUMERIC_KINDS, batch_input, live_input
from core.features.specs import Kind
from core.online.decoding import decode_value, value_decoder
from core.online.encoding import encode_values

_RNG = np.random.default_rng(21)
_OFFLINE: dict[Kind, tuple[ValueType, list[Any]]] = {
    "float64": (
        ValueType.DOUBLE,
        [*_RNG.normal(scale=1e4, size=300).tolist(), 0.1, -0.0, 1e308, 5e-324, None],
    ),
    "float32": (  # offline columns are usually double precision: Feast rounds them to float32 online
        ValueType.FLOAT,
        [*_RNG.normal(scale=1e4, size=300).tolist(), 0.1, 1 / 3, -0.0, 3.4e38, 1e-40, 16_777_217.0, None],
    ),
    "int64": (
        ValueType.INT64,
        [
            0,
            1,
            -1,
            2**53,
            2**53 + 1,
            2**63 - 1,
            -(2**63),
            *_RNG.integers(-(2**62), 2**62, 200).tolist(),
            None,
        ],
    ),
    "int32": (
        ValueType.INT32,
        [0, 7, -7, 2**31 - 1, -(2**31), *_RNG.integers(-1000, 1000, 100).tolist(), None],
    ),
    "bool": (ValueType.BOOL, [True, False, None, True]),
    "string": (ValueType.STRING, ["gold", "", "日本", "🙂", None, "12.5"]),
}


def _pg_float8(kind: Kind, value: Any) -> float:
    """What the point-in-time query reads: `value::float8` (`(value::int4)::float8` for a bool)."""
    if value is None:
        return math.nan
    return float(int(value)) if kind == "bool" else float(value)


def _batch(kind: Kind, values: list[Any]) -> list[Any]:
    if kind == "string":
        strings: list[Any] = batch_input(kind, np.array(values, dtype=object)).tolist()
        return strings
    column = np.array([_pg_float8(kind, v) for v in values], dtype=np.float64)
    return list(batch_input(kind, column))


def _bits(value: Any) -> Any:
    return np.float64(value).view(np.uint64).item() if isinstance(value, float) else value


@pytest.mark.parametrize("kind", list(_OFFLINE))
def test_batch_and_live_inputs_are_bitwise_equal(kind: Kind) -> None:
    """For each kind, every offline value gives the same model input on both paths: equal float64 bits
    (NaN for null) for numbers and bools, the same str (None for null) for strings."""
    value_type, values = _OFFLINE[kind]
    batch = _batch(kind, values)
    materialized = [proto.SerializeToString() for proto in python_values_to_proto_values(values, value_type)]
    pushed = encode_values(kind, values)
    decoder = value_decoder(kind)
    for written in (materialized, pushed):
        live = [live_input(kind, decoder(data)) for data in written]
        assert [_bits(v) for v in live] == [_bits(v) for v in batch]
    if kind in NUMERIC_KINDS:
        assert all(isinstance(v, float) for v in batch)
    else:
        assert batch == values  # strings are never turned into numbers


def test_float32_batch_inputs_are_what_feast_stores_online() -> None:
    """A double offline value of a Float32 feature reaches the model as its float32 rounding on both paths,
    not as the double itself (the cause of parity breaches before float32 had its own kind)."""
    assert _batch("float32", [0.1]) == [float(np.float32(0.1))] != [0.1]
    assert live_input("float32", decode_value(encode_values("float32", [0.1])[0])) == float(np.float32(0.1))
    assert _batch("float32", [1e39]) == [math.inf]  # beyond float32: infinity, as protobuf stores it
    with pytest.raises(TypeError, match="string"):
        live_input("float64", "1.5")
