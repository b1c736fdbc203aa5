"""The materialization watermark read from a serialized Feast FeatureView: the latest interval end, unknown
fields skipped, None when never materialized, malformed bytes refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.features.watermarks import latest_materialized_end
from core.online.encoding import encode_timestamp, varint


def _field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _timestamp(moment: datetime) -> bytes:
    return encode_timestamp(int(moment.timestamp()), moment.microsecond * 1000)


def _view(*intervals: tuple[datetime, datetime], extra: bytes = b"") -> bytes:
    meta = _field(1, _timestamp(datetime(2026, 1, 1, tzinfo=UTC)))  # created_timestamp
    for start, end in intervals:
        meta += _field(3, _field(1, _timestamp(start)) + _field(2, _timestamp(end)))
    meta += varint(4 << 3) + varint(7)  # current_version_number, a varint
    spec = _field(1, b"customer_profile") + extra
    return _field(1, spec) + _field(2, meta)


def test_latest_end_of_several_intervals() -> None:
    """The latest end wins whatever the order; microseconds are kept."""
    first = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
    second = (datetime(2026, 3, 2, 6, 0, tzinfo=UTC), datetime(2026, 3, 2, 7, 15, 3, 250_000, tzinfo=UTC))
    assert latest_materialized_end(_view(second, first)) == second[1]


def test_never_materialized_is_none() -> None:
    """No interval: None (the checker turns it into 'run tandem materialize first')."""
    assert latest_materialized_end(_view()) is None
    assert latest_materialized_end(b"") is None


def test_unknown_fields_are_skipped() -> None:
    """Fields this reader doesn't know (fixed32, fixed64, nested) don't disturb it."""
    extra = b"\x1d" + bytes(4) + b"\x21" + bytes(8) + _field(9, b"\x08\x01")
    end = datetime(2026, 3, 2, tzinfo=UTC)
    assert latest_materialized_end(_view((datetime(2026, 3, 1, tzinfo=UTC), end), extra=extra)) == end


@pytest.mark.parametrize("data", [b"\x12\x05\x1a\x03", b"\x12", b"\x0f"])
def test_malformed_bytes_raise(data: bytes) -> None:
    """Truncated or invalid protobuf raises ValueError instead of guessing."""
    with pytest.raises(ValueError, match="protobuf"):
        latest_materialized_end(data)
