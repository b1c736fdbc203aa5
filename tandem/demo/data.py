"""Seed the card-fraud demo: the offline source tables the Feast feature views read, and the training labels.

`seed_demo_data` drops and recreates `features.customer_profile`, `features.customer_txn_stats` and
`features.fraud_labels` in one transaction and fills them with PostgreSQL binary COPY: each chunk of
customers (see `tandem.demo.risk`) becomes one numpy structured array whose bytes are exactly the COPY
tuples, so no Python code runs per row. The same (customers, days, seed, end) gives identical tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from tandem.demo.risk import (
    CHUNK_CUSTOMERS,
    INTEGER_FEATURES,
    PROFILE_FEATURES,
    TXN_FEATURES,
    Column,
    DemoChunk,
    epoch_us,
    generate_chunk,
    hidden_risk_logit,
)

__all__ = [
    "LABEL_TABLE",
    "PROFILE_FEATURES",
    "PROFILE_TABLE",
    "TXN_FEATURES",
    "TXN_TABLE",
    "SeedSummary",
    "hidden_risk_logit",
    "seed_demo_data",
]

SCHEMA = "features"
PROFILE_TABLE = "features.customer_profile"
TXN_TABLE = "features.customer_txn_stats"
LABEL_TABLE = "features.fraud_labels"

_KEYS = ("customer_id", "event_timestamp", "created")
_LABEL_COLUMNS = ("customer_id", "event_timestamp", "label")
_TIMESTAMP_COLUMNS = frozenset({"event_timestamp", "created"})
_PG_EPOCH_US = epoch_us(datetime(2000, 1, 1, tzinfo=UTC))
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_COPY_TRAILER = b"\xff\xff"


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """What a seed wrote. Every event_timestamp lies in [start, end]; `seconds` is wall time incl. commit."""

    customers: int
    days: int
    seed: int
    start: datetime
    end: datetime
    profile_rows: int
    txn_rows: int
    label_rows: int
    fraud_rate: float
    seconds: float


@dataclass(frozen=True, slots=True)
class _Encoded:
    """One chunk as binary COPY tuples, per table."""

    customers: int
    profile: npt.NDArray[np.void]
    txn: npt.NDArray[np.void]
    labels: npt.NDArray[np.void]
    frauds: int


def _sql_type(column: str) -> str:
    if column in _TIMESTAMP_COLUMNS:
        return "TIMESTAMPTZ NOT NULL"
    if column in ("customer_id", "label"):
        return "BIGINT NOT NULL"
    return "BIGINT" if column in INTEGER_FEATURES else "DOUBLE PRECISION"


def _ident(table: str) -> sql.Identifier:
    schema, name = table.split(".")
    return sql.Identifier(schema, name)


def _tuples(columns: Sequence[Column]) -> npt.NDArray[np.void]:
    """Binary COPY tuples: int16 field count, then (int32 length 8, big-endian int64/float64) per field."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, column in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", ">i8" if column.dtype.kind == "i" else ">f8")]
    rows = np.empty(columns[0].shape[0], dtype=np.dtype(fields))
    rows["n"] = len(columns)
    for i, column in enumerate(columns):
        rows[f"l{i}"] = 8
        rows[f"v{i}"] = column
    return rows


def _encode(chunk: DemoChunk) -> _Encoded:
    """Flatten a chunk customer-major and encode the three tables' rows."""
    days = chunk.profile_event_us.shape[1]
    ids = np.repeat(chunk.customer_ids, days)
    present = chunk.txn_present.ravel()
    profile = [
        ids,
        chunk.profile_event_us.ravel() - _PG_EPOCH_US,
        chunk.profile_created_us.ravel() - _PG_EPOCH_US,
        *(chunk.profile[name].ravel() for name in PROFILE_FEATURES),
    ]
    txn = [
        ids[present],
        chunk.txn_event_us.ravel()[present] - _PG_EPOCH_US,
        chunk.txn_created_us.ravel()[present] - _PG_EPOCH_US,
        *(chunk.txn[name].ravel()[present] for name in TXN_FEATURES),
    ]
    labels = [chunk.customer_ids, chunk.label_event_us - _PG_EPOCH_US, chunk.label]
    return _Encoded(
        customers=chunk.customer_ids.size,
        profile=_tuples(profile),
        txn=_tuples(txn),
        labels=_tuples(labels),
        frauds=int(chunk.label.sum()),
    )


def _copy(cur: psycopg.Cursor[Any], table: str, columns: Sequence[str], rows: npt.NDArray[np.void]) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary, FREEZE)").format(
        _ident(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cur.copy(statement) as copy:
        copy.write(_COPY_HEADER)
        copy.write(rows.data.cast("B"))
        copy.write(_COPY_TRAILER)


def _recreate(cur: psycopg.Cursor[Any]) -> None:
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    for table, columns in _TABLES:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(table)))
        spec = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_sql_type(c))) for c in columns
        )
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(_ident(table), spec))


def _index_and_analyze(cur: psycopg.Cursor[Any]) -> None:
    for table, _ in _TABLES:
        index = sql.Identifier(f"{table.split('.')[1]}_customer_ts_idx")
        cur.execute(
            sql.SQL("CREATE INDEX {} ON {} (customer_id, event_timestamp)").format(index, _ident(table))
        )
        cur.execute(sql.SQL("ANALYZE {}").format(_ident(table)))


_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (PROFILE_TABLE, _KEYS + PROFILE_FEATURES),
    (TXN_TABLE, _KEYS + TXN_FEATURES),
    (LABEL_TABLE, _LABEL_COLUMNS),
)


def seed_demo_data(
    conn: psycopg.Connection[Any],
    *,
    customers: int,
    days: int,
    seed: int,
    end: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> SeedSummary:
    """Replace the demo tables with `customers` x `days` of deterministic data ending at `end`.

    Runs in `conn.transaction()`: on a connection outside a transaction it commits on success; inside the
    caller's transaction it is a savepoint and the caller commits. On failure the previous tables survive.
    `progress(done_customers, total_customers)` is called after each chunk of `CHUNK_CUSTOMERS`.
    The next chunk is generated in a worker thread while the current one is copied.
    """
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if days < 2:
        raise ValueError(f"days must be at least 2 (labels need a previous snapshot), got {days}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if end.tzinfo is None or end.utcoffset() is None:
        raise ValueError("end must be a timezone-aware datetime (UTC), got a naive one")
    end = end.astimezone(UTC)
    started = time.perf_counter()
    chunks = -(-customers // CHUNK_CUSTOMERS)

    def build(index: int) -> _Encoded:
        size = min(CHUNK_CUSTOMERS, customers - index * CHUNK_CUSTOMERS)
        return _encode(generate_chunk(seed=seed, chunk_index=index, customers=size, days=days, end=end))

    profile_rows = txn_rows = frauds = done = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-data") as pool:
        pending: Future[_Encoded] = pool.submit(build, 0)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
            _recreate(cur)
            for index in range(chunks):
                encoded = pending.result()
                if index + 1 < chunks:
                    pending = pool.submit(build, index + 1)
                for (table, columns), rows in zip(
                    _TABLES, (encoded.profile, encoded.txn, encoded.labels), strict=True
                ):
                    _copy(cur, table, columns, rows)
                profile_rows += encoded.profile.size
                txn_rows += encoded.txn.size
                frauds += encoded.frauds
                done += encoded.customers
                if progress is not None:
                    progress(done, customers)
            _index_and_analyze(cur)
    last = end.replace(minute=0, second=0, microsecond=0)
    return SeedSummary(
        customers=customers,
        days=days,
        seed=seed,
        start=last - timedelta(days=days - 1, hours=1),
        end=end,
        profile_rows=profile_rows,
        txn_rows=txn_rows,
        label_rows=customers,
        fraud_rate=frauds / customers,
        seconds=time.perf_counter() - started,
    )
