"""The references the stream ingestion bench compares `tandem stream` with: reading the stream alone (raw
XREADGROUP + XACK, no stores) and writing the offline rows alone (raw COPY, no broker, validation or online)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
from psycopg import sql

from bench.stream_world import FEATURES, create_table, fill_redis
from core.stores.resolve import Stores

__all__ = ["raw_copy", "raw_redis"]


def raw_redis(client: redis.Redis, rows: list[dict[str, Any]], batch: int) -> float:
    """XREADGROUP + XACK of every entry, nothing else."""
    stream = f"bench:raw:{uuid.uuid4().hex[:8]}"
    fill_redis(client, stream, rows)
    started = time.perf_counter()
    while True:
        reply: Any = client.xreadgroup("tandem", "raw", {stream: ">"}, count=batch)
        if not reply or not reply[0][1]:
            break
        client.xack(stream, "tandem", *[entry_id for entry_id, _ in reply[0][1]])
    elapsed = time.perf_counter() - started
    client.delete(stream)
    return elapsed


def raw_copy(stores: Stores, rows: list[dict[str, Any]], batch: int) -> float:
    """The rows COPYed into a fresh offline table, `batch` rows per transaction, nothing else."""
    view = create_table(stores)
    columns = ["customer_id", "event_timestamp", "created", *(f.name for f in FEATURES)]
    now = datetime.now(UTC)
    records = [
        [
            row["customer_id"],
            datetime.fromisoformat(row["event_timestamp"]),
            now,
            *(row[f.name] for f in FEATURES),
        ]
        for row in rows
    ]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.SQL(view.table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with psycopg.connect(stores.postgres.url()) as conn:
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(statement) as copy:
                for record in records[start : start + batch]:
                    copy.write_row(record)
        return time.perf_counter() - started
