"""The many-entities-per-call newer-wins write (core.online.newer_wins_many) leaves exactly what the
one-call-per-entity script leaves (itself checked against Feast's writer in test_online_store_writes.py),
says the same rows were written, and reloads its script after SCRIPT FLUSH."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from core.endpoints import RedisEndpoint
from core.features.keys import EntityKey
from core.online.keys import encode_entity_keys
from core.online.rows import FeatureColumn, FeatureRows
from core.online.store import OnlineStore
from core.stores.resolve import Stores

T0 = np.datetime64("2026-05-02T00:00:00", "us")


@pytest.fixture
def redis_client(stores: Stores) -> Iterator[redis.Redis]:
    """A client on the test Redis; the keys of this test's projects are deleted afterwards."""
    client = redis.Redis.from_url(stores.redis.url())
    yield client
    client.close()


def _rows(ids: np.ndarray, stamps: np.ndarray, seed: int, *, ttl: int | None = None) -> FeatureRows:
    rng = np.random.default_rng(seed)
    amounts = rng.normal(size=len(ids)).astype(object)
    amounts[::7] = None
    return FeatureRows(
        view="nwm_view",
        key=EntityKey.single("customer_id"),
        entity_ids=ids.astype(np.int64),
        columns=(
            FeatureColumn("amount", "float64", amounts),
            FeatureColumn(
                "label", "string", np.array([f"l{v}%" for v in rng.integers(0, 99, len(ids))], dtype=object)
            ),
            FeatureColumn("count", "int64", rng.integers(0, 1000, len(ids)).astype(object)),
        ),
        event_timestamps=stamps,
        key_ttl_s=ttl,
    )


def _hashes(client: redis.Redis, project: str, ids: np.ndarray) -> list[dict[bytes, bytes]]:
    keys = encode_entity_keys(join_key="customer_id", entity_ids=ids.astype(np.int64), project=project)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)  # type: ignore[arg-type]  # redis-py annotates str; bytes keys work
    found: list[dict[bytes, bytes]] = pipe.execute()
    return found


def _purge(client: redis.Redis, project: str) -> None:
    for key in client.scan_iter(match=f"*{project}", count=1000):
        client.delete(key)


@pytest.mark.parametrize("per_call", [7, 256])
def test_many_per_call_equals_one_per_call(stores: Stores, redis_client: redis.Redis, per_call: int) -> None:
    """Over rows written at t0: older, equal, a microsecond older/newer, newer, unseen and repeated entities
    (the batch's later row compared with its earlier one, across call boundaries too) give the same hashes,
    TTLs and written flags as one call per entity."""
    one, many = f"nw1{uuid.uuid4().hex[:10]}", f"nwm{uuid.uuid4().hex[:10]}"
    base_ids = np.arange(40)
    update_ids = np.concatenate([base_ids, np.arange(100, 110), base_ids[30:35], np.arange(100, 105)])
    us, day = np.timedelta64(1, "us"), np.timedelta64(1, "D")
    stamps = np.array([T0] * len(update_ids))
    stamps[0:10] = T0 - day
    stamps[10:20] = T0
    stamps[20:25] = T0 - us
    stamps[25:30] = T0 + us
    stamps[30:40] = T0 + day
    stamps[40:50] = T0
    stamps[50:55] = T0 + day / 2  # older than the batch's earlier row of the entity: kept
    stamps[55:60] = T0 + us  # newer than the batch's earlier row: written
    endpoint: RedisEndpoint = stores.redis
    results = []
    try:
        for project, calls in ((one, 1), (many, per_call)):
            store = OnlineStore.connect(endpoint, project=project)
            try:
                store.write(_rows(base_ids, np.array([T0] * 40), seed=1))
                results.append(
                    store.write_newer_mask(_rows(update_ids, stamps, seed=2, ttl=3600), per_call=calls)
                )
            finally:
                store.close()
        np.testing.assert_array_equal(results[0], results[1])
        assert int(results[1].sum()) == 5 + 10 + 10 + 5
        ids = np.unique(update_ids)
        assert _hashes(redis_client, one, ids) == _hashes(redis_client, many, ids)
        keys_one = encode_entity_keys(join_key="customer_id", entity_ids=ids.astype(np.int64), project=one)
        keys_many = encode_entity_keys(join_key="customer_id", entity_ids=ids.astype(np.int64), project=many)
        pipe = redis_client.pipeline(transaction=False)
        for key in (*keys_one, *keys_many):
            pipe.ttl(key)
        ttls = [int(ttl) > 0 for ttl in pipe.execute()]
        assert ttls[: len(ids)] == ttls[len(ids) :]
        assert any(ttls)
    finally:
        _purge(redis_client, one)
        _purge(redis_client, many)


def test_many_per_call_reloads_its_script_after_a_flush(stores: Stores, redis_client: redis.Redis) -> None:
    """After SCRIPT FLUSH, Redis answers NOSCRIPT and the store resends the script by body."""
    project = f"nwf{uuid.uuid4().hex[:10]}"
    rows = _rows(np.arange(30), np.array([T0] * 30), seed=3)
    store = OnlineStore.connect(stores.redis, project=project)
    try:
        redis_client.script_flush()
        assert int(store.write_newer_mask(rows, per_call=8).sum()) == 30
        assert int(store.write_newer_mask(rows, per_call=8).sum()) == 0  # the same event times: nothing newer
    finally:
        store.close()
        _purge(redis_client, project)


def test_batched_newer_or_equal_equals_one_call_per_entity(stores: Stores, redis_client: redis.Redis) -> None:
    """Publishing stored scores (`ties_win`: an equal event time replaces, an older one never does), in
    pipelined batches of many entities per call, writes what one call per entity writes."""
    one, many = f"nq1{uuid.uuid4().hex[:10]}", f"nqm{uuid.uuid4().hex[:10]}"
    base_ids = np.arange(300)
    update_ids = np.concatenate([base_ids, np.arange(1000, 1100)])
    stamps = np.array([T0] * len(update_ids))
    stamps[0:100] = T0 - np.timedelta64(1, "us")  # older: kept
    stamps[100:200] = T0  # equal: replaced (ties win)
    stamps[200:300] = T0 + np.timedelta64(1, "D")  # newer: replaced
    written = []
    try:
        for project, batch_rows in ((one, None), (many, 128)):
            store = OnlineStore.connect(stores.redis, project=project)
            try:
                store.write(_rows(base_ids, np.array([T0] * len(base_ids)), seed=1))
                written.append(
                    store.write_newer(_rows(update_ids, stamps, seed=2), ties_win=True, batch_rows=batch_rows)
                )
            finally:
                store.close()
        assert written == [300, 300]
        ids = np.unique(update_ids)
        assert _hashes(redis_client, one, ids) == _hashes(redis_client, many, ids)
    finally:
        _purge(redis_client, one)
        _purge(redis_client, many)
