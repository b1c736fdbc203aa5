"""Timezone-aware datetimes as microseconds since the Unix epoch, vectorised (no numpy datetime objects).

numpy converts datetime objects to `datetime64` at ~2 µs each; here `datetime.timestamp` (C) gives the
seconds, the microseconds come from the `microsecond` field, and numpy rounds away the float's error: the
whole seconds are `rint(timestamp - microsecond / 1e6)`, exact since a double's error there stays far below
half a second for years 1-9999. Pure: no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = ["utc_micros", "wall_micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_tzinfo = operator.attrgetter("tzinfo")
_microsecond = operator.attrgetter("microsecond")


def utc_micros(moments: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """Microseconds since 1970-01-01 UTC of each aware datetime (a naive one is taken as UTC)."""
    count = len(moments)
    if count and moments.count(moments[0]) == count:  # one time for all (created: `now`)
        return np.full(count, _one(moments[0]), dtype=np.int64)
    if None in map(_tzinfo, moments):  # naive: `timestamp` would read local time
        return np.fromiter(map(_one, moments), dtype=np.int64, count=count)
    stamps = np.fromiter(map(datetime.timestamp, moments), dtype=np.float64, count=count)
    micros = np.fromiter(map(_microsecond, moments), dtype=np.int64, count=count)
    seconds = np.rint(stamps - micros / 1e6).astype(np.int64)
    return seconds * 1_000_000 + micros


def _one(moment: datetime) -> int:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _ONE_US


def wall_micros(moments: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """Microseconds since 1970-01-01 of each datetime's wall time, its offset ignored (what a PostgreSQL
    `timestamp` column keeps of a text value with an offset)."""
    if all(zone is UTC for zone in map(_tzinfo, moments)):
        return utc_micros(moments)
    return np.fromiter((_one(m.replace(tzinfo=None)) for m in moments), dtype=np.int64, count=len(moments))
