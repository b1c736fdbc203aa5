"""Pushed values are checked against their feature's kind, one line naming the row and field (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ViewSpec
from core.push.rows import PushError, validate_rows

NOW = datetime(2026, 3, 1, tzinfo=UTC)
VIEW = ViewSpec(
    name="driver_hourly_stats",
    table="public.driver_stats",
    key=EntityKey.single("driver_id"),
    timestamp_field="event_timestamp",
    created_field=None,
    ttl_s=0,
    features=(
        FeatureSpec("conv_rate", "float32"),
        FeatureSpec("avg_speed", "float64"),
        FeatureSpec("trips", "int32"),
        FeatureSpec("lifetime_trips", "int64"),
        FeatureSpec("active", "bool"),
        FeatureSpec("city", "string"),
    ),
    push_source="driver_stats_push",
)
GOOD: dict[str, Any] = {
    "driver_id": 1001,
    "event_timestamp": "2026-03-01T00:00:00Z",
    "conv_rate": 0.25,
    "avg_speed": 1e300,
    "trips": -(2**31),
    "lifetime_trips": 2**63 - 1,
    "active": True,
    "city": "Zürich",
}


def test_values_in_range_are_kept() -> None:
    """Every kind at its limits is accepted; ints given for float features become floats."""
    rows = validate_rows(VIEW, [GOOD, {**GOOD, "conv_rate": 3, "trips": 2**31 - 1, "city": None}], now=NOW)
    assert rows.values["conv_rate"] == [0.25, 3.0]
    assert isinstance(rows.values["conv_rate"][1], float)
    assert rows.values["trips"] == [-(2**31), 2**31 - 1]
    assert rows.values["lifetime_trips"] == [2**63 - 1] * 2
    assert rows.values["city"] == ["Zürich", None]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("trips", 2**31, r"rows\[1\]\.trips: integer out of int32 range"),
        ("trips", -(2**31) - 1, r"rows\[1\]\.trips: integer out of int32 range"),
        ("trips", 1.5, r"rows\[1\]\.trips: expected an integer"),
        ("trips", True, r"rows\[1\]\.trips: expected an integer"),
        ("lifetime_trips", 2**63, r"rows\[1\]\.lifetime_trips: integer out of int64 range"),
        ("lifetime_trips", "7", r"rows\[1\]\.lifetime_trips: expected an integer"),
        ("conv_rate", 3.5e38, r"rows\[1\]\.conv_rate: number out of float32 range"),
        ("conv_rate", -(10**39), r"rows\[1\]\.conv_rate: number out of float32 range"),
        ("conv_rate", float("nan"), r"rows\[1\]\.conv_rate: NaN and infinity"),
        ("conv_rate", "0.5", r"rows\[1\]\.conv_rate: expected a number"),
        ("avg_speed", 10**400, r"rows\[1\]\.avg_speed: number out of float64 range"),
        ("avg_speed", False, r"rows\[1\]\.avg_speed: expected a number"),
        ("active", 1, r"rows\[1\]\.active: expected true or false"),
        ("city", 5, r"rows\[1\]\.city: expected a string"),
    ],
)
def test_bad_values_name_row_and_field(field: str, value: Any, message: str) -> None:
    """A value of the wrong type or out of its kind's range is refused in one line naming row and field."""
    with pytest.raises(PushError, match=message) as caught:
        validate_rows(VIEW, [GOOD, {**GOOD, field: value}], now=NOW)
    assert "\n" not in str(caught.value)
