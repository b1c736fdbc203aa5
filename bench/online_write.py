"""Publishing `batch_predictions` rows to Redis: Feast's writer vs Tandem's `OnlineStore.write` / `write_newer`.

    .venv/bin/python -m bench.online_write [--rows 200000] [--redis-url URL] [--skip-feast]

`--redis-url` defaults to $TANDEM_BENCH_REDIS_URL, else redis://127.0.0.1:6379/0.

Every path writes the same rows (score float64, model_version / run_id / feature_snapshot_ts strings, 5%
null scores) under its own throw-away Feast project, whose keys are deleted afterwards. Paths:

- `feast convert+write`: what `FeatureStore.write_to_online_store` does — DataFrame -> protobuf rows, then
  `RedisOnlineStore.online_write_batch` with the default timestamp dedup (one HMGET pass first);
- `feast online_write_batch`: the same write with the protobuf rows built beforehand (not timed);
- `feast skip_dedup`: as above with `skip_dedup: true`, Feast's fastest path and our writer's semantics;
- `pipeline.hset(mapping)`: our bytes, sent through redis-py's pipeline API instead of pre-packed RESP;
- `OnlineStore.write`: Tandem's writer (always overwrites, as `skip_dedup`), pre-packed batches streamed;
- `OnlineStore.write_newer`: Tandem's newer-wins write (Feast's dedup rule: one HGET pass first).

`ratio` is each path's rows/s over the first path's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis
from feast import Entity, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.passthrough_provider import PassthroughProvider
from feast.types import Float64, Int64, String

from core.endpoints import parse_redis_url
from core.features.keys import EntityKey
from core.online.encoding import encode_timestamps, encode_values, feature_field, timestamp_field
from core.online.keys import encode_entity_keys
from core.online.rows import FeatureColumn, FeatureRows
from core.online.store import OnlineStore

VIEW = "batch_predictions"
JOIN_KEY = "customer_id"
FEATURES = {"score": Float64, "model_version": String, "run_id": String, "feature_snapshot_ts": String}


def _view() -> FeatureView:
    customer = Entity(name="customer", join_keys=[JOIN_KEY], value_type=ValueType.INT64)
    return FeatureView(
        name=VIEW,
        entities=[customer],
        ttl=timedelta(days=7),
        schema=[Field(name=JOIN_KEY, dtype=Int64), *(Field(name=k, dtype=v) for k, v in FEATURES.items())],
        online=True,
        source=FileSource(name="bench_source", path="unused.parquet", timestamp_field="event_timestamp"),
    )


def _rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    score = rng.random(n)
    score[rng.random(n) < 0.05] = np.nan
    base = np.datetime64("2026-05-01T00:00:00", "us")
    snapshot = [f'{{"customer_profile": "2026-04-30T{h:02d}:00:00+00:00"}}' for h in rng.integers(0, 24, n)]
    return pd.DataFrame(
        {
            JOIN_KEY: np.arange(1, n + 1, dtype=np.int64) * 7_919,
            "score": score,
            "model_version": "risk-v3",
            "run_id": "run-" + uuid.uuid4().hex,
            "feature_snapshot_ts": snapshot,
            "event_timestamp": np.full(n, base),
        }
    )


def _config(project: str, connection_string: str, registry: Path, *, skip_dedup: bool) -> RepoConfig:
    return RepoConfig(
        project=project,
        provider="local",
        registry=str(registry),
        online_store={"type": "redis", "connection_string": connection_string, "skip_dedup": skip_dedup},
        entity_key_serialization_version=3,
    )


def _feature_rows(df: pd.DataFrame) -> FeatureRows:
    return FeatureRows(
        view=VIEW,
        key=EntityKey.single(JOIN_KEY),
        entity_ids=df[JOIN_KEY].to_numpy(dtype=np.int64),
        columns=tuple(
            FeatureColumn(name, "float64" if name == "score" else "string", df[name].to_numpy())
            for name in FEATURES
        ),
        event_timestamps=df["event_timestamp"].to_numpy(dtype="datetime64[us]"),
    )


def _ours(client: redis.Redis, project: str, df: pd.DataFrame, *, newer: bool) -> None:
    """Tandem's store on the bench's client (not closed here: the client is shared)."""
    store = OnlineStore(client, project=project)
    if newer:
        store.write_newer(_feature_rows(df))
    else:
        store.write(_feature_rows(df))


def _hset_mapping(client: redis.Redis, project: str, df: pd.DataFrame, batch_rows: int = 5_000) -> None:
    """Our bytes through redis-py's pipeline API: what pre-packing the RESP buffer saves."""
    fields = [timestamp_field(VIEW)] + [feature_field(VIEW, name) for name in FEATURES]
    for start in range(0, len(df), batch_rows):
        part = df.iloc[start : start + batch_rows]
        keys = encode_entity_keys(
            join_key=JOIN_KEY, entity_ids=part[JOIN_KEY].to_numpy(dtype=np.int64), project=project
        )
        stamps = encode_timestamps(part["event_timestamp"].to_numpy(dtype="datetime64[us]"), len(part))
        values = [stamps] + [
            encode_values("float64" if name == "score" else "string", part[name].to_numpy())
            for name in FEATURES
        ]
        pipe = client.pipeline(transaction=False)
        for key, row in zip(keys, zip(*values, strict=True), strict=True):
            pipe.hset(key, mapping=dict(zip(fields, row, strict=True)))  # type: ignore[arg-type]
        pipe.execute()


def _purge(client: redis.Redis, project: str) -> None:
    keys = list(client.scan_iter(match=f"*{project}", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])


def main() -> None:
    """Time each path on the same rows and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument(
        "--redis-url", default=os.environ.get("TANDEM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--skip-feast", action="store_true", help="time only the non-Feast paths")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    connection_string = parse_redis_url(args.redis_url).feast_connection_string()
    df = _rows(args.rows)
    view = _view()
    registry = Path(tempfile.mkdtemp()) / "registry.db"

    def convert() -> list[Any]:
        return list(PassthroughProvider._prep_rows_to_write_for_ingestion(view, df))

    def feast(*, skip_dedup: bool, protos: list[Any] | None) -> Callable[[str], None]:
        def run(project: str) -> None:
            config = _config(project, connection_string, registry, skip_dedup=skip_dedup)
            RedisOnlineStore().online_write_batch(config, view, protos or convert(), None)

        return run

    paths: list[tuple[str, Callable[[str], None]]] = []
    if not args.skip_feast:
        protos = convert()
        paths += [
            ("feast convert+write", feast(skip_dedup=False, protos=None)),
            ("feast online_write_batch", feast(skip_dedup=False, protos=protos)),
            ("feast skip_dedup", feast(skip_dedup=True, protos=protos)),
        ]
    paths += [
        ("pipeline.hset(mapping)", lambda project: _hset_mapping(client, project, df)),
        ("OnlineStore.write", lambda project: _ours(client, project, df, newer=False)),
        ("OnlineStore.write_newer", lambda project: _ours(client, project, df, newer=True)),
    ]

    print(f"{'path':<26} {'rows':>9} {'seconds':>9} {'rows/s':>11} {'ratio':>7}")
    reference: float | None = None
    for name, run in paths:
        project = f"bench{uuid.uuid4().hex[:10]}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                run(project)
                seconds = time.perf_counter() - start
        finally:
            _purge(client, project)
        speed = args.rows / seconds
        reference = reference or speed
        print(f"{name:<26} {args.rows:>9,} {seconds:>9.2f} {speed:>11,.0f} {speed / reference:>6.1f}x")
    client.close()


if __name__ == "__main__":
    main()
