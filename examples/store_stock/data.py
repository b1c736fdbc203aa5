"""Deterministic data of the store-stock example: hourly store traffic and shelf status, and labels to learn from.

    python examples/store_stock/data.py --stores 60 --products 20 --days 3     # uses TANDEM_POSTGRES_URL

(Re)creates four tables in the database:
- `public.store_traffic` (store_code text, event_timestamp, created, footfall bigint, region text,
  avg_basket real): one row per store and hour, the newest at the current hour;
- `public.shelf_status` (store_code text, sku bigint, event_timestamp, created, stock integer,
  price double precision, on_promo boolean, days_since_restock real): one row per store, product and hour;
- `public.store_visits` (store_code, event_timestamp, visits): every three hours per store, the visits of the
  next hour, half an hour after a traffic row; a known function of that row (`expected_visits`, where the
  region matters) plus noise, so a regression fits them measurably (holdout R2 near 1);
- `public.stockout_labels` (store_code, sku, event_timestamp, stockout): every six hours per store and
  product, whether the shelf ran empty in the next hours (1) or not (0), half an hour after a status row;
  a known logistic function of that row (`stockout_logit`), so a classifier ranks measurably better than
  chance (holdout ROC AUC well above 0.5).
Store codes are `S-001`, `S-002`, ... and the last store is `Zürich-1` (keys are UTF-8 text); SKUs are
4001, 4002, ... Same seed, stores, products, days and end hour: the same rows.
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

__all__ = [
    "FIRST_SKU",
    "REGIONS",
    "SeedSummary",
    "expected_visits",
    "main",
    "seed",
    "stockout_logit",
    "store_codes",
]

FIRST_SKU = 4001
VISITS_EVERY_HOURS = 3
STOCKOUT_EVERY_HOURS = 6
NON_ASCII_STORE = "Zürich-1"
# The region's share of next-hour visits beyond footfall: a categorical input the model must encode.
REGIONS: dict[str, float] = {"north": 10.0, "south": 25.0, "east": 0.0, "west": 15.0, "alps": 40.0}

_TABLES = """
DROP TABLE IF EXISTS public.store_traffic, public.shelf_status, public.store_visits, public.stockout_labels;
CREATE TABLE public.store_traffic (
    store_code text NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created timestamptz NOT NULL,
    footfall bigint,
    region text,
    avg_basket real
);
CREATE TABLE public.shelf_status (
    store_code text NOT NULL,
    sku bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created timestamptz NOT NULL,
    stock integer,
    price double precision,
    on_promo boolean,
    days_since_restock real
);
CREATE TABLE public.store_visits (
    store_code text NOT NULL,
    event_timestamp timestamptz NOT NULL,
    visits double precision NOT NULL
);
CREATE TABLE public.stockout_labels (
    store_code text NOT NULL,
    sku bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    stockout integer NOT NULL
);
"""
_INDEXES = """
CREATE INDEX ON public.store_traffic (store_code, event_timestamp);
CREATE INDEX ON public.shelf_status (store_code, sku, event_timestamp);
ANALYZE public.store_traffic;
ANALYZE public.shelf_status;
ANALYZE public.store_visits;
ANALYZE public.stockout_labels;
"""


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """What `seed` wrote."""

    stores: int
    products: int
    traffic_rows: int
    shelf_rows: int
    visit_labels: int
    stockout_labels: int
    stockout_rate: float
    end: datetime


def store_codes(stores: int) -> list[str]:
    """The stores' codes: `S-001` ... and, last, `Zürich-1`."""
    return [f"S-{index:03d}" for index in range(1, stores)] + [NON_ASCII_STORE]


def expected_visits(footfall: int, region: str, avg_basket: float) -> float:
    """The hidden relation: visits to a store in the next hour, given its traffic now (before noise)."""
    return REGIONS[region] + 0.8 * footfall - 1.5 * avg_basket


def stockout_logit(stock: int, price: float, on_promo: bool, days_since_restock: float) -> float:
    """The hidden relation: log-odds that a shelf in this state runs empty in the next hours."""
    return 1.5 - 0.15 * stock + 1.2 * on_promo + 0.25 * days_since_restock - 0.03 * price


def _traffic(
    rng: np.random.Generator, code: str, times: list[datetime]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """One store's hourly traffic rows and its next-hour visit labels."""
    hours = len(times)
    region = "alps" if code == NON_ASCII_STORE else str(rng.choice(sorted(REGIONS)))
    size = rng.uniform(60.0, 250.0)
    hour_of_day = np.array([t.hour for t in times])
    shape = 1.0 + 0.6 * np.sin((hour_of_day - 10) / 24 * 2 * np.pi)
    footfall = np.maximum(size * shape + rng.normal(0.0, 10.0, hours), 0).astype(np.int64)
    basket = (rng.uniform(15.0, 45.0) + rng.normal(0.0, 3.0, hours)).astype(np.float32)
    rows = [(code, t, t, int(footfall[h]), region, float(basket[h])) for h, t in enumerate(times)]
    labels = []
    for h in range(VISITS_EVERY_HOURS - 1, hours - 1, VISITS_EVERY_HOURS):
        mean = expected_visits(int(footfall[h]), region, float(basket[h]))
        labels.append((code, times[h] + timedelta(minutes=30), mean + float(rng.normal(0.0, 2.0))))
    return rows, labels


def _shelf(
    rng: np.random.Generator, code: str, sku: int, base_price: float, times: list[datetime]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """One product's hourly shelf status in one store (stock sold down between restocks) and its labels."""
    hours = len(times)
    period = int(rng.integers(48, 168))  # hours between restocks
    since = (np.arange(hours) + int(rng.integers(0, period))) % period
    capacity, rate = int(rng.integers(20, 60)), rng.uniform(0.1, 0.8)
    stock = np.maximum(capacity - np.round(rate * since + rng.normal(0.0, 2.0, hours)), 0).astype(np.int32)
    days = (since / 24.0).astype(np.float32)
    promo = np.repeat(rng.random(hours // 24 + 1) < 0.25, 24)[:hours]
    price = np.round(base_price * rng.uniform(0.9, 1.1) * np.where(promo, 0.8, 1.0), 2)
    rows = [
        (code, sku, t, t, int(stock[h]), float(price[h]), bool(promo[h]), float(days[h]))
        for h, t in enumerate(times)
    ]
    labels = []
    for h in range(STOCKOUT_EVERY_HOURS - 1, hours - 1, STOCKOUT_EVERY_HOURS):
        logit = stockout_logit(int(stock[h]), float(price[h]), bool(promo[h]), float(days[h]))
        chance = 1.0 / (1.0 + math.exp(-logit))
        labels.append((code, sku, times[h] + timedelta(minutes=30), int(rng.random() < chance)))
    return rows, labels


def _rows(
    *, stores: int, products: int, days: int, seed_value: int, end: datetime
) -> Iterator[tuple[list[tuple[Any, ...]], ...]]:
    """Per store: its traffic rows, its visit labels, its shelf rows and its stock-out labels."""
    rng = np.random.default_rng(seed_value)
    hours = days * 24
    times = [end - timedelta(hours=hours - 1 - h) for h in range(hours)]
    base_prices = np.round(rng.uniform(1.0, 30.0, products), 2)
    for code in store_codes(stores):
        traffic, visits = _traffic(rng, code, times)
        shelf: list[tuple[Any, ...]] = []
        stockouts: list[tuple[Any, ...]] = []
        for index in range(products):
            rows, labels = _shelf(rng, code, FIRST_SKU + index, float(base_prices[index]), times)
            shelf.extend(rows)
            stockouts.extend(labels)
        yield traffic, visits, shelf, stockouts


def seed(
    conn: psycopg.Connection[Any],
    *,
    stores: int = 60,
    products: int = 20,
    days: int = 3,
    seed_value: int = 5,
    end: datetime | None = None,
) -> SeedSummary:
    """(Re)create and fill the four tables (COPY) in one transaction; `end` (default: this hour, UTC) is the
    time of the newest traffic and shelf rows."""
    if stores < 1 or products < 1 or days < 1:
        raise ValueError(f"stores, products and days must be at least 1, got {stores}, {products}, {days}")
    moment = (end or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    per_store = list(_rows(stores=stores, products=products, days=days, seed_value=seed_value, end=moment))
    tables = {  # table -> its rows, in the order of per_store's parts
        "store_traffic": [row for parts in per_store for row in parts[0]],
        "store_visits": [row for parts in per_store for row in parts[1]],
        "shelf_status": [row for parts in per_store for row in parts[2]],
        "stockout_labels": [row for parts in per_store for row in parts[3]],
    }
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_TABLES)
        for table, rows in tables.items():
            with cur.copy(f"COPY public.{table} FROM STDIN") as copy:  # fixed table names
                for row in rows:
                    copy.write_row(row)
        cur.execute(_INDEXES)
    stockouts = tables["stockout_labels"]
    return SeedSummary(
        stores=stores,
        products=products,
        traffic_rows=len(tables["store_traffic"]),
        shelf_rows=len(tables["shelf_status"]),
        visit_labels=len(tables["store_visits"]),
        stockout_labels=len(stockouts),
        stockout_rate=sum(row[3] for row in stockouts) / len(stockouts) if stockouts else 0.0,
        end=moment,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: seed the database of `--postgres-url` (default: TANDEM_POSTGRES_URL)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=60)
    parser.add_argument("--products", type=int, default=20)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5, help="random seed")
    parser.add_argument("--postgres-url", default=os.environ.get("TANDEM_POSTGRES_URL"))
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error('no database: set TANDEM_POSTGRES_URL (eval "$(tandem env)") or pass --postgres-url')
    if args.stores < 1 or args.products < 1 or args.days < 1:
        parser.error("--stores, --products and --days must be at least 1")
    with psycopg.connect(args.postgres_url) as conn:
        summary = seed(conn, stores=args.stores, products=args.products, days=args.days, seed_value=args.seed)
    print(  # noqa: T201 - the script's one line of output
        f"seeded {summary.stores} stores x {summary.products} products: {summary.traffic_rows} traffic rows "
        f"and {summary.shelf_rows} shelf rows up to {summary.end:%Y-%m-%d %H:%M} UTC, "
        f"{summary.visit_labels} visit labels, {summary.stockout_labels} stock-out labels "
        f"(stock-out rate {summary.stockout_rate:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
