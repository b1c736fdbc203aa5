"""Online read latency: Tandem's `OnlineStore` / `AsyncOnlineStore` vs Feast's `get_online_features` vs a bare
HMGET pipeline.

    .venv/bin/python bench/online_read.py [--customers 5000] [--reads 1000] [--feast-reads 300]

Seeds the demo data in a throw-away database and Feast project (bench.common.bench_stores), materializes it
with Feast and publishes a stored prediction for every customer. Then, for k in (1, 10, 100) random
customers per read, times each path over N reads (same id lists for every path, warmed up first):

- `floor: packed HMGETs, no decode`: the `ReadLayout`'s request bytes on one pooled connection, replies
  read but not decoded — the round trip itself;
- `redis-py pipeline, no decode`: the same HMGETs through `pipeline(transaction=False)`;
- `OnlineStore.read` (redis-py) / `AsyncOnlineStore.read` over `RespPool` and over `Coalescer` (what the
  API uses): the same round trip, decoded into `OnlineRow`s (features, event times, parsed stored
  prediction);
- `feast (service + stored)`: `get_online_features` of the same data (the feature service's refs plus the
  four stored-prediction refs), `.to_dict()`;
- `feast (service object)`: `get_online_features(features=<FeatureService looked up once>)`, `.to_dict()`:
  less data (no stored prediction), Feast's idiomatic call.

`ratio` is each path's median over the floor's median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_stores, print_table
from core.endpoints import RedisEndpoint
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.features.keys import EntityKey
from core.features.snapshots import service_specs
from core.online.async_store import AsyncOnlineStore, AsyncTransport
from core.online.coalesce import Coalescer
from core.online.resp_pool import RespPool
from core.online.rows import FeatureColumn, FeatureRows
from core.online.store import OnlineStore
from core.online.wire import ReadLayout
from core.settings import Settings
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_PREDICTIONS_VIEW

KS = (1, 10, 100)


def _prepare(settings: Settings, stores: Stores, *, customers: int) -> Any:
    """Schema, repo, 3 days of demo data materialized, a stored prediction per customer; the FeatureStore."""
    engine = create_db_engine(stores.postgres)
    upgrade_schema(engine)
    engine.dispose()
    apply_feature_repo(settings, stores)
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=customers, days=3, seed=1, end=end)
    store = open_feature_store(settings, stores)
    store.materialize(start_date=end - timedelta(days=4), end_date=now)
    ids = np.arange(1, customers + 1, dtype=np.int64)
    snapshot = json.dumps({"customer_profile": end.isoformat(), "customer_txn_stats": end.isoformat()})
    online = OnlineStore.connect(stores.redis, project=settings.feast_project)
    online.write(
        FeatureRows(
            view=DEMO_PREDICTIONS_VIEW,
            key=EntityKey.single("customer_id"),
            entity_ids=ids,
            columns=(
                FeatureColumn("score", "float64", np.random.default_rng(1).random(customers)),
                FeatureColumn("model_version", "string", ["bench-v1"] * customers),
                FeatureColumn("run_id", "string", [str(uuid.uuid4())] * customers),
                FeatureColumn("feature_snapshot_ts", "string", [snapshot] * customers),
            ),
            event_timestamps=now - timedelta(minutes=10),
        )
    )
    online.close()
    return store


def _time(run: Callable[[list[int]], object], batches: list[list[int]]) -> list[float]:
    """Milliseconds per call, after a few warm-up calls."""
    for ids in batches[:5]:
        run(ids)
    out = []
    for ids in batches:
        start = time.perf_counter_ns()
        run(ids)
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def _time_async(
    endpoint: RedisEndpoint, project: str, layout: ReadLayout, batches: Sequence[list[int]], *, coalesce: bool
) -> list[float]:
    """As `_time`, for `AsyncOnlineStore.read`: one event loop, and a pool made in it (its connections
    belong to it), used directly or behind a Coalescer."""

    async def loop() -> list[float]:
        pool = RespPool(endpoint, timeout_s=5.0)
        transport: AsyncTransport = Coalescer(pool) if coalesce else pool
        store = AsyncOnlineStore(transport, project=project)
        try:
            for ids in batches[:5]:
                await store.read(layout, ids)
            out = []
            for ids in batches:
                start = time.perf_counter_ns()
                await store.read(layout, ids)
                out.append((time.perf_counter_ns() - start) / 1e6)
            return out
        finally:
            await pool.close()

    return asyncio.run(loop())


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def main() -> None:
    """Prepare the stores, time every path for each k and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--reads", type=int, default=1_000, help="reads per k for the non-Feast paths")
    parser.add_argument("--feast-reads", type=int, default=300, help="reads per k for the Feast paths")
    args = parser.parse_args()
    rnd = random.Random(7)
    with bench_stores() as (settings, stores):
        mark = time.perf_counter()
        store = _prepare(settings, stores, customers=args.customers)
        print(f"prepared {args.customers:,} customers in {time.perf_counter() - mark:.1f} s")
        service, predictions = service_specs(
            settings, stores, feature_service=DEMO_FEATURE_SERVICE, predictions_view=DEMO_PREDICTIONS_VIEW
        )
        layout = ReadLayout(project=settings.feast_project, service=service, predictions=predictions)
        feature_service = store.get_feature_service(settings.feature_service)
        refs = [*service.refs, *(f"{predictions.name}:{f.name}" for f in predictions.features)]
        client = redis.Redis.from_url(stores.redis.url())
        online = OnlineStore(client, project=settings.feast_project)
        fields = layout.fields()

        def packed(ids: list[int]) -> object:
            payload = layout.request(ids)
            connection = client.connection_pool.get_connection()
            try:
                connection.send_packed_command([payload])  # type: ignore[no-untyped-call]  # untyped
                return [connection.read_response() for _ in ids]  # type: ignore[no-untyped-call]  # untyped
            finally:
                client.connection_pool.release(connection)

        def raw(ids: list[int]) -> object:
            with client.pipeline(transaction=False) as pipe:
                for entity_id in ids:
                    pipe.execute_command("HMGET", layout.key(entity_id), *fields)  # type: ignore[no-untyped-call]  # untyped in redis-py
                return pipe.execute()

        def feast(features: Any) -> Callable[[list[int]], object]:
            def run(ids: list[int]) -> object:
                rows = [{"customer_id": i} for i in ids]
                return store.get_online_features(features=features, entity_rows=rows).to_dict()

            return run

        def in_loop(*, coalesce: bool) -> Callable[[list[list[int]]], list[float]]:
            def run(batches: list[list[int]]) -> list[float]:
                return _time_async(stores.redis, settings.feast_project, layout, batches, coalesce=coalesce)

            return run

        def timed(run: Callable[[list[int]], object]) -> Callable[[list[list[int]]], list[float]]:
            return lambda batches: _time(run, batches)

        paths: list[tuple[str, Callable[[list[list[int]]], list[float]]]] = [
            ("floor: packed HMGETs, no decode", timed(packed)),
            ("redis-py pipeline, no decode", timed(raw)),
            ("OnlineStore.read (redis-py)", timed(lambda ids: online.read(layout, ids))),
            ("AsyncOnlineStore.read (RespPool)", in_loop(coalesce=False)),
            ("AsyncOnlineStore.read (Coalescer)", in_loop(coalesce=True)),
            ("feast (service + stored)", timed(feast(refs))),
            ("feast (service object)", timed(feast(feature_service))),
        ]
        table = []
        for k in KS:
            batches = [rnd.sample(range(1, args.customers + 1), k) for _ in range(args.reads)]
            floor = 0.0
            for name, run in paths:
                used = batches[: args.feast_reads] if name.startswith("feast") else batches
                times = run(used)
                median = statistics.median(times)
                floor = floor or median
                table.append(
                    [k, name, len(used), f"{median:.3f}", f"{_p99(times):.3f}", f"{median / floor:.2f}x"]
                )
        print_table(
            f"online read latency, ms ({args.customers:,} customers, {len(fields)} fields per entity)",
            ["k", "path", "reads", "median", "p99", "ratio"],
            table,
        )
        online.close()


if __name__ == "__main__":
    main()
