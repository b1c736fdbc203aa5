"""A pushable view over a fresh offline table (`item_id`, event time, `amount`, `visits`), and reading its rows
back from both stores: what the push and the stream ingestion tests write through and check."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
import redis
from psycopg import sql

from core.endpoints import RedisEndpoint
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ViewSpec
from core.online.decoding import decode_timestamp, value_decoder
from core.online.encoding import feature_field, timestamp_field
from core.online.keys import encode_entity_keys
from core.stores.resolve import Stores

__all__ = ["FEATURES", "item_row", "item_view", "offline_count", "offline_newest", "online_items"]

FEATURES = (FeatureSpec("amount", "float64"), FeatureSpec("visits", "int64"))


@contextmanager
def item_view(stores: Stores, *, prefix: str) -> Iterator[ViewSpec]:
    """A pushable view over a fresh table `public.<prefix>_<random>` (dropped afterwards)."""
    table = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE public.{} (item_id BIGINT, event_timestamp TIMESTAMPTZ, "
                "amount DOUBLE PRECISION, visits BIGINT)"
            ).format(sql.Identifier(table))
        )
    try:
        yield ViewSpec(
            name=table,
            table=f"public.{table}",
            key=EntityKey.single("item_id"),
            timestamp_field="event_timestamp",
            created_field=None,
            ttl_s=86_400,
            features=FEATURES,
            push_source=f"{table}_push",
        )
    finally:
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))


def item_row(item: int, when: datetime, amount: float, visits: int = 1) -> dict[str, Any]:
    """A row as `POST /v1/push` (and a stream event) carries it."""
    return {"item_id": item, "event_timestamp": when.isoformat(), "amount": amount, "visits": visits}


def offline_count(stores: Stores, view: ViewSpec) -> int:
    """Rows in the view's offline table."""
    with psycopg.connect(stores.postgres.url()) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(view.table))).fetchone()
    assert row is not None
    return int(row[0])


def offline_newest(stores: Stores, view: ViewSpec) -> dict[int, tuple[datetime, float, int]]:
    """The newest offline row per entity: (event time, amount, visits)."""
    query = sql.SQL(
        "SELECT DISTINCT ON (item_id) item_id, event_timestamp, amount, visits FROM {} "
        "ORDER BY item_id, event_timestamp DESC"
    ).format(sql.SQL(view.table))
    with psycopg.connect(stores.postgres.url()) as conn:
        return {row[0]: (row[1], row[2], row[3]) for row in conn.execute(query)}


def online_items(
    endpoint: RedisEndpoint, view: ViewSpec, ids: list[int], *, project: str
) -> dict[int, tuple[datetime, float, int]]:
    """The online row per entity that has one: (event time, amount, visits)."""
    client = redis.Redis(host=endpoint.host, port=endpoint.port, db=endpoint.db)
    keys = encode_entity_keys(
        join_key=view.key.join_keys[0], entity_ids=np.array(ids, dtype=np.int64), project=project
    )
    fields = [timestamp_field(view.name), *(feature_field(view.name, f.name) for f in FEATURES)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, fields)  # type: ignore[arg-type]  # redis-py annotates str; bytes keys work
    found: dict[int, tuple[datetime, float, int]] = {}
    for entity, (stamp, amount, visits) in zip(ids, pipe.execute(), strict=True):
        if stamp is not None:
            found[entity] = (
                decode_timestamp(stamp),
                value_decoder("float64")(amount),
                value_decoder("int64")(visits),
            )  # type: ignore[assignment]
    client.close()
    return found
