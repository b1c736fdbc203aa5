"""Appending pushed rows to a feature view's offline source table (Feast can't push offline to PostgreSQL).

Feast's PostgreSQL offline store rejects pushes (feast-dev/feast#3759), so Tandem inserts the rows into the
view's source table itself. The table name comes from Feast's registry, never from a request. The caller's
own statements (the push outbox row) commit in the same transaction as the rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from core.errors import NotFoundError, StoreUnavailableError, first_line
from core.features.specs import ViewSpec

__all__ = ["OfflineRows", "PgAppender", "Work", "insert_offline"]

T = TypeVar("T")
Work: TypeAlias = Callable[[AsyncConnection[Any]], Awaitable[T]]
"""Statements a caller runs on the connection, inside the transaction."""


@dataclass(frozen=True, slots=True)
class OfflineRows:
    """Rows for a view's source table: its join key, event time, created time (if any) and features."""

    view: ViewSpec
    columns: tuple[str, ...]
    records: list[list[Any]]

    def __len__(self) -> int:
        return len(self.records)


async def insert_offline(conn: AsyncConnection[Any], rows: OfflineRows) -> None:
    """Append the rows to the view's offline source table (inside the caller's transaction)."""
    view = rows.view
    if view.table.startswith("("):
        raise NotFoundError(f"view {view.name!r} reads a query, not a table: pushed rows cannot be appended")
    statement = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})").format(
        table=sql.SQL(view.table),  # from Feast's registry, not from the request
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in rows.columns),
        values=sql.SQL(", ").join(sql.Placeholder() for _ in rows.columns),
    )
    async with conn.cursor() as cur:
        await cur.executemany(statement, rows.records)


class PgAppender:
    """Appends rows on an asyncio pool and runs the caller's statements in the same transaction
    (`append(rows, also)`), or in a short one of their own (`transaction(work)`).

    Any failure (connection, pool timeout, SQL error, commit) raises StoreUnavailableError naming
    PostgreSQL, except NotFoundError (the view cannot take appended rows).
    """

    def __init__(self, pool: AsyncConnectionPool, *, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def append(self, rows: OfflineRows, also: Work[T]) -> T:
        """Insert `rows`, run `also(connection)`, commit both; returns what `also` returned."""

        async def work(conn: AsyncConnection[Any]) -> T:
            await insert_offline(conn, rows)
            return await also(conn)

        return await self.transaction(work, what="offline append")

    async def transaction(self, work: Work[T], *, what: str = "push outbox") -> T:
        """Run `work(connection)` in one transaction and commit; returns what it returned."""
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn, conn.transaction():
                return await work(conn)
        except (NotFoundError, StoreUnavailableError):
            raise
        except Exception as exc:  # every failure here is PostgreSQL's: one error for callers
            raise StoreUnavailableError(f"PostgreSQL ({what}): {first_line(exc)}") from exc
