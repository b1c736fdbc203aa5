"""Deterministic data of the bike-stations example: hourly station status and the rentals that followed.

    python examples/bike_stations/data.py --stations 200 --days 3     # uses TANDEM_POSTGRES_URL

(Re)creates two tables in the database:
- `public.station_status` (station_id integer, event_timestamp, created, bikes_available integer,
  docks_available integer, temperature_c double precision, rain_mm real): one row per station and hour,
  the newest at the current hour;
- `public.station_rentals` (station_id, event_timestamp, rentals): every three hours per station, the bikes
  rented in the next hour, half an hour after a status row. Rentals follow a known linear function of that
  row (`expected_rentals`) plus unit noise, so a linear model fits them measurably (holdout R2 near 1).
Same seed, stations, days and end hour: the same rows.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

__all__ = ["FIRST_STATION_ID", "SeedSummary", "expected_rentals", "main", "seed"]

FIRST_STATION_ID = 101
LABEL_EVERY_HOURS = 3

_TABLES = """
DROP TABLE IF EXISTS public.station_status, public.station_rentals;
CREATE TABLE public.station_status (
    station_id integer NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created timestamptz NOT NULL,
    bikes_available integer,
    docks_available integer,
    temperature_c double precision,
    rain_mm real
);
CREATE TABLE public.station_rentals (
    station_id integer NOT NULL,
    event_timestamp timestamptz NOT NULL,
    rentals double precision NOT NULL
);
"""
_INDEXES = """
CREATE INDEX ON public.station_status (station_id, event_timestamp);
ANALYZE public.station_status;
ANALYZE public.station_rentals;
"""


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """What `seed` wrote."""

    stations: int
    status_rows: int
    label_rows: int
    mean_rentals: float
    end: datetime


def expected_rentals(
    bikes_available: int, docks_available: int, temperature_c: float, rain_mm: float
) -> float:
    """The hidden relation: bikes rented in the next hour at a station in this state (before noise)."""
    return 2.0 + 0.4 * bikes_available - 0.05 * docks_available + 0.3 * temperature_c - 1.5 * rain_mm


def _status(rng: np.random.Generator, hours: int) -> tuple[np.ndarray[Any, Any], ...]:
    """One station's hourly bikes, docks (int32), temperature (float64) and rain (float32)."""
    capacity = int(rng.integers(15, 40))
    bikes = rng.integers(0, capacity + 1, hours).astype(np.int32)
    docks = (capacity - bikes).astype(np.int32)
    hour_of_day = np.arange(hours) % 24
    temperature = 12.0 + 8.0 * np.sin((hour_of_day - 9) / 24 * 2 * np.pi) + rng.normal(0.0, 1.5, hours)
    rain = np.where(rng.random(hours) < 0.2, rng.exponential(2.0, hours), 0.0).astype(np.float32)
    return bikes, docks, temperature.astype(np.float64), rain


def _rows(
    *, stations: int, days: int, seed_value: int, end: datetime
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Per station: its status rows and its rental rows."""
    rng = np.random.default_rng(seed_value)
    hours = days * 24
    times = [end - timedelta(hours=hours - 1 - h) for h in range(hours)]
    for index in range(stations):
        station_id = FIRST_STATION_ID + index
        bikes, docks, temperature, rain = _status(rng, hours)
        status = [
            (
                station_id,
                times[h],
                times[h],
                int(bikes[h]),
                int(docks[h]),
                float(temperature[h]),
                float(rain[h]),
            )
            for h in range(hours)
        ]
        rentals = []
        for h in range(LABEL_EVERY_HOURS - 1, hours - 1, LABEL_EVERY_HOURS):
            mean = expected_rentals(int(bikes[h]), int(docks[h]), float(temperature[h]), float(rain[h]))
            rentals.append((station_id, times[h] + timedelta(minutes=30), mean + float(rng.normal(0.0, 1.0))))
        yield status, rentals


def seed(
    conn: psycopg.Connection[Any],
    *,
    stations: int = 200,
    days: int = 3,
    seed_value: int = 11,
    end: datetime | None = None,
) -> SeedSummary:
    """(Re)create and fill both tables (COPY) in one transaction; `end` (default: this hour, UTC) is the
    time of the newest status row."""
    if stations < 1 or days < 1:
        raise ValueError(f"stations and days must be at least 1, got {stations} and {days}")
    moment = (end or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    status_rows = 0
    rentals: list[tuple[Any, ...]] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_TABLES)
        with cur.copy("COPY public.station_status FROM STDIN") as copy:
            for status, station_rentals in _rows(
                stations=stations, days=days, seed_value=seed_value, end=moment
            ):
                for row in status:
                    copy.write_row(row)
                status_rows += len(status)
                rentals.extend(station_rentals)
        with cur.copy("COPY public.station_rentals FROM STDIN") as copy:
            for row in rentals:
                copy.write_row(row)
        cur.execute(_INDEXES)
    return SeedSummary(
        stations=stations,
        status_rows=status_rows,
        label_rows=len(rentals),
        mean_rentals=sum(row[2] for row in rentals) / len(rentals) if rentals else 0.0,
        end=moment,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: seed the database of `--postgres-url` (default: TANDEM_POSTGRES_URL)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11, help="random seed")
    parser.add_argument("--postgres-url", default=os.environ.get("TANDEM_POSTGRES_URL"))
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error('no database: set TANDEM_POSTGRES_URL (eval "$(tandem env)") or pass --postgres-url')
    if args.stations < 1 or args.days < 1:
        parser.error("--stations and --days must be at least 1")
    with psycopg.connect(args.postgres_url) as conn:
        summary = seed(conn, stations=args.stations, days=args.days, seed_value=args.seed)
    print(  # noqa: T201 - the script's one line of output
        f"seeded {summary.stations} stations: {summary.status_rows} hourly status rows up to "
        f"{summary.end:%Y-%m-%d %H:%M} UTC, {summary.label_rows} rental labels "
        f"(mean {summary.mean_rentals:.1f} rentals)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
