"""The live path's model input built a column at a time equals `live_input` value by value, for every numeric
kind and every kind of decoded value (numbers, bools, null, huge ints, non-finite floats), and a string in a
numeric feature is refused as before."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from core.features.inputs import live_input, numeric_column
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, Kind, ServiceSpec, ViewSpec
from core.online.rows import OnlineRow
from core.serving.answer import live_matrix

NUMERIC: tuple[Kind, ...] = ("float64", "float32", "int64", "int32", "bool")
SPECIAL: list[float | int | bool | None] = [
    None, True, False, 0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 0.1, -0.0, 1e300, -1e300, 3.4e38, 3.5e38,
    math.inf, -math.inf, math.nan, 1e-45, 1e-46,
]  # fmt: skip


def _same(left: np.ndarray, right: np.ndarray) -> bool:
    return (
        left.shape == right.shape
        and left.dtype == right.dtype
        and np.array_equal(left, right, equal_nan=True)
    )


@pytest.mark.parametrize("kind", NUMERIC)
def test_a_numeric_column_equals_live_input_value_by_value(kind: Kind) -> None:
    """Each special value alone and mixed at random with others: the column is `live_input` of each."""
    rng = random.Random(kind)
    cases = [[value] for value in SPECIAL] + [[], [None, None]]
    cases += [
        [rng.choice([*SPECIAL, rng.uniform(-1e6, 1e6), rng.randint(-(2**40), 2**40)]) for _ in range(50)]
        for _ in range(200)
    ]
    for values in cases:
        expected = np.array([live_input(kind, value) for value in values], dtype=np.float64)
        assert _same(numeric_column(kind, list(values)), expected), values


def test_a_string_in_a_numeric_feature_is_refused_as_live_input_refuses_it() -> None:
    """A string online for a numeric feature raises the same error as value by value."""
    with pytest.raises(TypeError, match="holds a string online"):
        numeric_column("float64", [1.0, "1.5"])


def test_live_matrix_is_the_value_by_value_matrix() -> None:
    """Rows with missing refs, nulls and every numeric kind: the matrix equals the value-by-value one."""
    kinds: list[Kind] = ["float64", "float32", "int64", "bool"]
    view = ViewSpec(
        "v",
        "t",
        EntityKey.single("id"),
        "ts",
        None,
        0,
        tuple(FeatureSpec(f"f{i}", k) for i, k in enumerate(kinds)),
    )
    refs = [f"v:f{i}" for i in range(len(kinds))]
    service = ServiceSpec("s", (view,), tuple(refs))
    rng = random.Random(1)
    rows = [
        OnlineRow(n, {ref: rng.choice(SPECIAL) for ref in refs if rng.random() < 0.9}, {"v": None}, None)
        for n in range(500)
    ]
    expected = np.array(
        [
            [live_input(kind, row.values.get(ref)) for ref, kind in zip(refs, kinds, strict=True)]
            for row in rows
        ],
        dtype=np.float64,
    )
    assert _same(live_matrix(rows, service, refs), expected)
    assert live_matrix([], service, refs).shape == (0, len(refs))
