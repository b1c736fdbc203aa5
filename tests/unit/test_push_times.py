"""Aware datetimes to microseconds since the epoch, vectorised, equal the exact datetime arithmetic for any
year, offset and microsecond (no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from core.push.times import utc_micros, wall_micros

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _moments(seed: int, *, offsets: bool) -> list[datetime]:
    rng = random.Random(seed)
    moments = [
        datetime(1, 1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 22, 59, 59, 999_999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        EPOCH,
    ]
    for _ in range(20_000):
        zone = (
            timezone(timedelta(minutes=rng.randrange(-1380, 1380))) if offsets and rng.random() < 0.3 else UTC
        )
        micro = rng.choice([0, 1, 499_999, 500_000, 999_999, rng.randrange(10**6)])
        moments.append(
            datetime(
                rng.randrange(2, 9999),
                rng.randrange(1, 13),
                rng.randrange(1, 29),
                rng.randrange(24),
                rng.randrange(60),
                rng.randrange(60),
                micro,
                tzinfo=zone,
            )
        )
    return moments


def test_utc_micros_are_exact() -> None:
    """Every year, offsets, microseconds at the edges: the exact `(moment - epoch) // 1 µs`."""
    for seed in range(3):
        moments = _moments(seed, offsets=True)
        assert utc_micros(moments).tolist() == [(m - EPOCH) // timedelta(microseconds=1) for m in moments]


def test_one_time_for_all_and_naive_times() -> None:
    """All equal (created times): one conversion; naive datetimes are UTC."""
    now = datetime(2026, 12, 1, 12, 0, 0, 7, tzinfo=UTC)
    assert utc_micros([now] * 3).tolist() == [(now - EPOCH) // timedelta(microseconds=1)] * 3
    assert utc_micros([now.replace(tzinfo=None), now]).tolist() == utc_micros([now, now]).tolist()
    assert utc_micros([]).tolist() == []


def test_wall_micros_ignore_the_offset() -> None:
    """The wall time, whatever the offset (what a `timestamp` column keeps)."""
    moments = _moments(7, offsets=True)
    naive = EPOCH.replace(tzinfo=None)
    assert wall_micros(moments).tolist() == [
        (m.replace(tzinfo=None) - naive) // timedelta(microseconds=1) for m in moments
    ]
    utc = _moments(8, offsets=False)
    assert wall_micros(utc).tolist() == utc_micros(utc).tolist()
