"""Deterministic data of the driver-ranking example: hourly driver statistics and ride outcomes to learn from.

    python examples/driver_ranking/data.py --drivers 300 --days 3     # uses TANDEM_POSTGRES_URL

(Re)creates two tables in the database:
- `public.driver_hourly_stats` (driver_id, event_timestamp, created, conv_rate real, acc_rate real,
  avg_daily_trips bigint): one row per driver and hour, the newest at the current hour;
- `public.driver_ranking_labels` (driver_id, event_timestamp, label): every six hours per driver, whether the
  driver completed the next ride offered (1) or not (0), half an hour after a statistics row. The outcome
  follows a known logistic function of that row (`completion_logit`), so a trained model ranks measurably
  better than chance (holdout ROC AUC well above 0.5).
Same seed, drivers, days and end hour: the same rows.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

__all__ = ["FIRST_DRIVER_ID", "SeedSummary", "completion_logit", "main", "seed"]

FIRST_DRIVER_ID = 1001  # as in Feast's tutorial
LABEL_EVERY_HOURS = 6

_TABLES = """
DROP TABLE IF EXISTS public.driver_hourly_stats, public.driver_ranking_labels;
CREATE TABLE public.driver_hourly_stats (
    driver_id bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created timestamptz NOT NULL,
    conv_rate real,
    acc_rate real,
    avg_daily_trips bigint
);
CREATE TABLE public.driver_ranking_labels (
    driver_id bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    label integer NOT NULL
);
"""
_INDEXES = """
CREATE INDEX ON public.driver_hourly_stats (driver_id, event_timestamp);
ANALYZE public.driver_hourly_stats;
ANALYZE public.driver_ranking_labels;
"""


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """What `seed` wrote."""

    drivers: int
    stats_rows: int
    label_rows: int
    positive_rate: float
    end: datetime


def completion_logit(conv_rate: float, acc_rate: float, avg_daily_trips: int) -> float:
    """The hidden relation: log-odds that a driver with these statistics completes the next ride."""
    return 6.0 * (conv_rate - 0.5) + 4.0 * (acc_rate - 0.6) + (avg_daily_trips - 500) / 200.0


def _stats(rng: np.random.Generator, hours: int) -> tuple[np.ndarray[Any, Any], ...]:
    """One driver's hourly conv_rate, acc_rate (float32) and avg_daily_trips around a personal baseline."""
    conv = np.clip(rng.uniform(0.2, 0.8) + rng.normal(0.0, 0.08, hours), 0.0, 1.0).astype(np.float32)
    acc = np.clip(rng.uniform(0.3, 0.9) + rng.normal(0.0, 0.08, hours), 0.0, 1.0).astype(np.float32)
    trips = np.maximum(rng.normal(rng.uniform(200, 800), 60.0, hours), 0).astype(np.int64)
    return conv, acc, trips


def _rows(
    *, drivers: int, days: int, seed_value: int, end: datetime
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Per driver: its statistics rows and its label rows."""
    rng = np.random.default_rng(seed_value)
    hours = days * 24
    times = [end - timedelta(hours=hours - 1 - h) for h in range(hours)]
    for index in range(drivers):
        driver_id = FIRST_DRIVER_ID + index
        conv, acc, trips = _stats(rng, hours)
        stats = [
            (driver_id, times[h], times[h], float(conv[h]), float(acc[h]), int(trips[h]))
            for h in range(hours)
        ]
        labels = []
        for h in range(LABEL_EVERY_HOURS - 1, hours - 1, LABEL_EVERY_HOURS):
            chance = 1.0 / (1.0 + math.exp(-completion_logit(float(conv[h]), float(acc[h]), int(trips[h]))))
            labels.append((driver_id, times[h] + timedelta(minutes=30), int(rng.random() < chance)))
        yield stats, labels


def seed(
    conn: psycopg.Connection[Any],
    *,
    drivers: int = 300,
    days: int = 3,
    seed_value: int = 7,
    end: datetime | None = None,
) -> SeedSummary:
    """(Re)create and fill both tables (COPY) in one transaction; `end` (default: this hour, UTC) is the
    time of the newest statistics row."""
    if drivers < 1 or days < 1:
        raise ValueError(f"drivers and days must be at least 1, got {drivers} and {days}")
    moment = (end or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    stats_rows = 0
    labels: list[tuple[Any, ...]] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_TABLES)
        with cur.copy("COPY public.driver_hourly_stats FROM STDIN") as copy:
            for stats, driver_labels in _rows(drivers=drivers, days=days, seed_value=seed_value, end=moment):
                for row in stats:
                    copy.write_row(row)
                stats_rows += len(stats)
                labels.extend(driver_labels)
        with cur.copy("COPY public.driver_ranking_labels FROM STDIN") as copy:
            for row in labels:
                copy.write_row(row)
        cur.execute(_INDEXES)
    positives = sum(row[2] for row in labels)
    return SeedSummary(
        drivers=drivers,
        stats_rows=stats_rows,
        label_rows=len(labels),
        positive_rate=positives / len(labels) if labels else 0.0,
        end=moment,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: seed the database of `--postgres-url` (default: TANDEM_POSTGRES_URL)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", type=int, default=300)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument("--postgres-url", default=os.environ.get("TANDEM_POSTGRES_URL"))
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error('no database: set TANDEM_POSTGRES_URL (eval "$(tandem env)") or pass --postgres-url')
    if args.drivers < 1 or args.days < 1:
        parser.error("--drivers and --days must be at least 1")
    with psycopg.connect(args.postgres_url) as conn:
        summary = seed(conn, drivers=args.drivers, days=args.days, seed_value=args.seed)
    print(  # noqa: T201 - the script's one line of output
        f"seeded {summary.drivers} drivers: {summary.stats_rows} hourly stats rows up to "
        f"{summary.end:%Y-%m-%d %H:%M} UTC, {summary.label_rows} labels "
        f"(completion rate {summary.positive_rate:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
