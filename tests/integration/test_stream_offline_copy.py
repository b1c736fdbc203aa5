"""The stream's binary COPY of offline rows stores exactly what the text COPY (`write_row`) stores, on a
real PostgreSQL, for every kind, nulls, strings, other time zones and int32 into int8; a column type it
does not write exactly sends the rows to the text COPY."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.features.keys import EntityId, EntityKey
from core.features.specs import ViewSpec
from core.push.rows import ValidRows, offline_rows
from core.stores.resolve import Stores
from streaming.offline_copy import copy_buffer
from tests.feature_kinds import EVERY_KIND

FEATURES = EVERY_KIND
COLUMNS = "ts TIMESTAMPTZ, created TIMESTAMP, a FLOAT8, b FLOAT8, c INT8, d INT8, e BOOLEAN, f TEXT"
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture
def conn(stores: Stores) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stores.postgres.url()) as connection:
        yield connection
        connection.rollback()


def _table(conn: psycopg.Connection[Any], key_type: str, *, b_type: str = "FLOAT8") -> str:
    name = f"copy_{uuid.uuid4().hex[:8]}"
    columns = COLUMNS.replace("b FLOAT8", f"b {b_type}")
    conn.execute(sql.SQL(f"CREATE TEMP TABLE {{}} (id {key_type}, {columns})").format(sql.Identifier(name)))
    return name


def _valid(view: ViewSpec, *, nulls: bool) -> ValidRows:
    ids: list[EntityId] = [f"k{i}é\t\\" if view.key.kinds[0] == "string" else i - 3 for i in range(6)]
    two = timezone(timedelta(hours=2))
    values: dict[str, list[Any]] = {
        "a": [0.1, -0.0, 1e308, -2.5, 5e-324, 3.0],
        "b": [3.4028234663852886e38, 1.0, -1.5, 0.0, 2.0, 7.0],
        "c": [2**63 - 1, -(2**63), 0, 1, -1, 42],
        "d": [2**31 - 1, -(2**31), 0, 5, 6, 7],
        "e": [True, False, True, False, True, False],
        "f": ["", "x", "multi\nline\ttab\\", "é😀", "NULL", "\\N"],
    }
    if nulls:
        for column in values.values():
            column[2] = None
    return ValidRows(
        view=view,
        entity_ids=ids,
        event_ts=[NOW - timedelta(microseconds=i * 1_000_001) for i in range(6)],
        created=[NOW.astimezone(two) - timedelta(hours=i) for i in range(6)],
        values=values,
    )


def _copied(
    conn: psycopg.Connection[Any],
    table: str,
    valid: ValidRows,
    *,
    binary: bool,
    positions: list[int] | None = None,
) -> list[Any]:
    rows = offline_rows(valid)
    statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in rows.columns),
        sql.SQL(" (FORMAT BINARY)" if binary else ""),
    )
    types = dict(
        conn.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0",
            [table],
        ).fetchall()
    )
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        if binary:
            data = copy_buffer(valid, types, positions)
            assert data is not None
            copy.write(data)
        else:
            for i, record in enumerate(rows.records):
                if positions is None or i in positions:
                    copy.write_row(record)
    result = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY ts").format(sql.Identifier(table))).fetchall()
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
    return result


@pytest.mark.parametrize(
    ("kind", "key_type"), [("int64", "BIGINT"), ("int32", "INTEGER"), ("string", "TEXT")]
)
@pytest.mark.parametrize("nulls", [False, True])
def test_the_binary_copy_stores_what_the_text_copy_stores(
    conn: psycopg.Connection[Any], kind: Any, key_type: str, nulls: bool
) -> None:
    """Same table, same rows: the binary buffer and `write_row` leave the very same values."""
    view = ViewSpec("v", "t", EntityKey.single("id", kind), "ts", "created", 0, FEATURES, "p")
    table = _table(conn, key_type)
    valid = _valid(view, nulls=nulls)
    assert _copied(conn, table, valid, binary=True) == _copied(conn, table, valid, binary=False)
    for positions in ([4], [1, 2, 5]):
        copied = _copied(conn, table, valid, binary=True, positions=positions)
        assert copied == _copied(conn, table, valid, binary=False, positions=positions)
        assert len(copied) == len(positions)


def test_columns_of_other_types_are_left_to_the_text_copy() -> None:
    """A REAL column for a float (rounding), an int8 key in an int4 column, a missing column or a composite
    key: no binary buffer."""
    view = ViewSpec("v", "t", EntityKey.single("id"), "ts", "created", 0, FEATURES, "p")
    valid = _valid(view, nulls=False)
    types = {"id": "int8", "ts": "timestamptz", "created": "timestamp", "a": "float8", "b": "float8"}
    types |= {"c": "int8", "d": "int4", "e": "bool", "f": "varchar"}
    assert copy_buffer(valid, types) is not None
    assert copy_buffer(valid, {**types, "b": "float4"}) is None
    assert copy_buffer(valid, {**types, "id": "int4"}) is None
    assert copy_buffer(valid, {k: v for k, v in types.items() if k != "e"}) is None
    composite = ViewSpec(
        "v", "t", EntityKey.of([("x", "int64"), ("y", "string")]), "ts", None, 0, FEATURES, "p"
    )
    assert copy_buffer(ValidRows(composite, [], [], [], {}), types) is None
