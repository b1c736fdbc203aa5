"""`seed_demo_data` against a real PostgreSQL: counts, determinism, time bounds, labels, reseeding, errors."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.endpoints import parse_postgres_url
from tandem.demo.data import (
    LABEL_TABLE,
    PROFILE_FEATURES,
    PROFILE_TABLE,
    TXN_FEATURES,
    TXN_TABLE,
    SeedSummary,
    seed_demo_data,
)

END = datetime(2025, 6, 1, 12, 34, 56, tzinfo=UTC)
CUSTOMERS = 2_000
DAYS = 10
TABLES = (PROFILE_TABLE, TXN_TABLE, LABEL_TABLE)


@pytest.fixture
def pg_conn() -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a fresh database, dropped afterwards (module-local until a shared one)."""
    server = parse_postgres_url(
        os.environ.get("TANDEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    name = f"seedtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(server.with_database(name).url(), autocommit=True) as conn:
            yield conn
    finally:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _table(name: str) -> sql.Identifier:
    schema, table = name.split(".")
    return sql.Identifier(schema, table)


def _scalar(conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    return int(_scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(_table(table))))


def _digest(conn: psycopg.Connection[Any], table: str) -> str:
    query = sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY customer_id, event_timestamp)) FROM {} t")
    return str(_scalar(conn, query.format(_table(table))))


def _columns(conn: psycopg.Connection[Any], table: str) -> tuple[str, ...]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'features'"
        " AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return tuple(str(name) for (name,) in rows)


def _seed(conn: psycopg.Connection[Any], *, seed: int = 7, customers: int = CUSTOMERS) -> SeedSummary:
    return seed_demo_data(conn, customers=customers, days=DAYS, seed=seed, end=END)


def test_row_counts_and_summary(pg_conn: psycopg.Connection[Any]) -> None:
    """One profile row per customer-day, ~97% of txn rows, one label per customer, as the summary says."""
    summary = _seed(pg_conn)
    assert _count(pg_conn, PROFILE_TABLE) == summary.profile_rows == CUSTOMERS * DAYS
    assert _count(pg_conn, TXN_TABLE) == summary.txn_rows
    assert 0.95 * CUSTOMERS * DAYS <= summary.txn_rows < CUSTOMERS * DAYS
    assert _count(pg_conn, LABEL_TABLE) == summary.label_rows == CUSTOMERS
    assert (summary.customers, summary.days, summary.seed, summary.end) == (CUSTOMERS, DAYS, 7, END)
    assert summary.seconds > 0
    keys = ("customer_id", "event_timestamp", "created")
    assert _columns(pg_conn, "customer_profile") == (*keys, *PROFILE_FEATURES)
    assert _columns(pg_conn, "customer_txn_stats") == (*keys, *TXN_FEATURES)
    assert _columns(pg_conn, "fraud_labels") == ("customer_id", "event_timestamp", "label")
    indexed = pg_conn.execute("SELECT tablename FROM pg_indexes WHERE schemaname = 'features'").fetchall()
    assert {t for (t,) in indexed} == {"customer_profile", "customer_txn_stats", "fraud_labels"}


def test_same_arguments_give_identical_tables(pg_conn: psycopg.Connection[Any]) -> None:
    """Seeding twice with the same arguments gives byte-identical tables; another seed gives other ones."""
    _seed(pg_conn)
    first = {t: _digest(pg_conn, t) for t in TABLES}
    _seed(pg_conn)
    assert {t: _digest(pg_conn, t) for t in TABLES} == first
    _seed(pg_conn, seed=8)
    second = {t: _digest(pg_conn, t) for t in TABLES}
    assert all(second[t] != first[t] for t in TABLES)


def test_no_event_after_end(pg_conn: psycopg.Connection[Any]) -> None:
    """Every event_timestamp lies in [summary.start, end], and no profile or txn row was created after end."""
    summary = _seed(pg_conn)
    for table in TABLES:
        query = sql.SQL("SELECT min(event_timestamp), max(event_timestamp) FROM {}").format(_table(table))
        row = pg_conn.execute(query).fetchone()
        assert row is not None
        assert summary.start <= row[0] <= row[1] <= END
    for table in (PROFILE_TABLE, TXN_TABLE):
        created = _scalar(pg_conn, sql.SQL("SELECT max(created) FROM {}").format(_table(table)))
        assert created <= END


def test_labels_one_per_customer_with_plausible_fraud_rate(pg_conn: psycopg.Connection[Any]) -> None:
    """Customers 1..N have exactly one label each, 1 s after one of their txn rows; fraud rate 2-10%."""
    summary = _seed(pg_conn)
    row = pg_conn.execute(
        "SELECT count(*), count(DISTINCT customer_id), min(customer_id), max(customer_id), avg(label)"
        " FROM features.fraud_labels"
    ).fetchone()
    assert row is not None
    assert row[:4] == (CUSTOMERS, CUSTOMERS, 1, CUSTOMERS)
    assert 0.02 <= float(row[4]) <= 0.10
    assert float(row[4]) == pytest.approx(summary.fraud_rate)
    matched = _scalar(
        pg_conn,
        sql.SQL(
            "SELECT count(*) FROM features.fraud_labels l JOIN features.customer_txn_stats t"
            " ON t.customer_id = l.customer_id AND t.event_timestamp = l.event_timestamp - interval '1 second'"
        ),
    )
    assert matched == CUSTOMERS


def test_reseed_replaces_everything(pg_conn: psycopg.Connection[Any]) -> None:
    """A second seed replaces the tables: only its rows remain and no (customer, timestamp) is duplicated."""
    _seed(pg_conn)
    summary = _seed(pg_conn, seed=3, customers=500)
    assert _count(pg_conn, PROFILE_TABLE) == 500 * DAYS
    assert _count(pg_conn, TXN_TABLE) == summary.txn_rows
    assert _count(pg_conn, LABEL_TABLE) == 500
    for table in TABLES:
        query = sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY customer_id, event_timestamp HAVING count(*) > 1) d"
        ).format(_table(table))
        assert _scalar(pg_conn, query) == 0


def test_failure_keeps_previous_tables(pg_conn: psycopg.Connection[Any]) -> None:
    """If a seed fails midway (here: the progress callback raises) the previous tables are left intact."""
    _seed(pg_conn)
    before = _digest(pg_conn, PROFILE_TABLE)
    calls: list[tuple[int, int]] = []

    def fail(done: int, total: int) -> None:
        calls.append((done, total))
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        seed_demo_data(pg_conn, customers=300, days=DAYS, seed=99, end=END, progress=fail)
    assert calls == [(300, 300)]
    assert _digest(pg_conn, PROFILE_TABLE) == before
    assert _count(pg_conn, LABEL_TABLE) == CUSTOMERS


@pytest.mark.parametrize(
    ("customers", "days", "end", "message"),
    [
        (0, DAYS, END, "customers"),
        (10, 1, END, "days"),
        (10, DAYS, END.replace(tzinfo=None), "timezone-aware"),
    ],
    ids=["no-customers", "one-day", "naive-end"],
)
def test_invalid_arguments_raise_value_error(
    pg_conn: psycopg.Connection[Any], customers: int, days: int, end: datetime, message: str
) -> None:
    """Fewer than one customer, fewer than two days or a naive end raise ValueError before touching the DB."""
    with pytest.raises(ValueError, match=message):
        seed_demo_data(pg_conn, customers=customers, days=days, seed=1, end=end)
    exists = _scalar(pg_conn, sql.SQL("SELECT to_regclass({})").format(sql.Literal(PROFILE_TABLE)))
    assert exists is None
