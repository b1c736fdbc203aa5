"""The online reader on real stores: what Feast's own read returns, in one Redis round trip, with the stored
batch prediction parsed, and with TTL applied the way offline retrieval applies it."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import psycopg
import pytest
import redis
import redis.asyncio
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine

from core.batch.publish import PublishBatch, publish_rows
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.features.snapshots import service_specs
from core.features.specs import ServiceSpec, ViewSpec
from core.online.encoding import feature_field, timestamp_field
from core.online.reader import OnlineReader, OnlineRow, apply_ttl
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.demo.data import seed_demo_data

NOW = datetime.now(UTC)
END = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
CUSTOMERS = 500
STORED = list(range(1, 400, 2))  # customers with a stored prediction
STORED_ONLY = CUSTOMERS + 7  # a stored prediction and no features
NO_TXN = [4, 10, 16]  # the transaction view removed entirely
NO_TXN_TS = 22  # only `_ts:customer_txn_stats` removed: Feast still returns the stored values
NO_PROFILE = 28  # the profile view removed entirely
UNKNOWN = [CUSTOMERS + 1, 10**12, -5]
SCORED_AT = NOW.replace(microsecond=123_457) - timedelta(minutes=20)
STORED_FEATURES = ("score", "model_version", "run_id", "feature_snapshot_ts")


@dataclass(frozen=True)
class World:
    """The module's Feast store, specs, reader, client and the stored predictions it wrote."""

    store: Any
    service: ServiceSpec
    predictions: ViewSpec
    reader: OnlineReader
    client: redis.Redis
    written: dict[int, tuple[float, str, str, str]]  # id -> (score, model_version, run_id, snapshot JSON)


def _hdel(client: redis.Redis, reader: OnlineReader, ids: Sequence[int], fields: Sequence[bytes]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for entity_id in ids:
            pipe.execute_command("HDEL", reader.key(entity_id), *fields)  # type: ignore[no-untyped-call]  # bytes fields
        pipe.execute()


def _view_fields(view: ViewSpec) -> list[bytes]:
    return [feature_field(view.name, f.name) for f in view.features] + [timestamp_field(view.name)]


def _publish(
    client: redis.Redis, project: str, predictions: ViewSpec
) -> dict[int, tuple[float, str, str, str]]:
    """Stored predictions for STORED and STORED_ONLY, through the batch publisher; what was written, by id."""
    ids = np.array([*STORED, STORED_ONLY], dtype=np.int64)
    profile = [(END - timedelta(days=i % 2)).isoformat() for i in ids.tolist()]
    txn = [None if i % 3 == 0 else (END - timedelta(minutes=i % 50)).isoformat() for i in ids.tolist()]
    snapshots = [
        json.dumps({"customer_profile": p, "customer_txn_stats": t}, separators=(",", ":"))
        for p, t in zip(profile, txn, strict=True)
    ]
    batch = PublishBatch(
        entity_ids=ids,
        scores=np.random.default_rng(3).random(len(ids)),
        model_version="risk-vtest",
        run_id=str(uuid.uuid4()),
        snapshots=np.array(snapshots, dtype=object),
        scored_at=SCORED_AT,
    )
    publish_rows(client, project=project, view=predictions, batch=batch, chunk_rows=1_000)
    return {
        i: (score, batch.model_version, batch.run_id, snapshot)
        for i, score, snapshot in zip(ids.tolist(), batch.scores.tolist(), snapshots, strict=True)
    }


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> Iterator[World]:
    """500 customers x 3 days reseeded and materialized; stored predictions for odd ids < 400 and one id
    without features; the transaction view (or its `_ts` only, or the profile view) removed for a few."""
    apply_feature_repo(settings, stores)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=CUSTOMERS, days=3, seed=21, end=END)
    service, predictions = service_specs(settings, stores)
    reader = OnlineReader(project=settings.feast_project, service=service, predictions=predictions)
    client = redis.Redis.from_url(stores.redis.url())
    # Other modules of the session wrote these customers' hashes; Feast's materialization skips a row whose
    # event time is not newer than the stored one, so reseeded rows at the same times would not replace them.
    client.delete(*(reader.key(i) for i in range(1, CUSTOMERS + 20)))
    store = open_feature_store(settings, stores)
    # A full-range materialization of the service's views: an incremental one would skip reseeded rows older
    # than an earlier module's materialization, and batch_predictions' source holds other modules' runs.
    views = [view.name for view in service.views]
    store.materialize(start_date=END - timedelta(days=4), end_date=NOW, feature_views=views)
    by_name = {view.name: view for view in service.views}
    written = _publish(client, settings.feast_project, predictions)
    _hdel(client, reader, NO_TXN, _view_fields(by_name["customer_txn_stats"]))
    _hdel(client, reader, [NO_TXN_TS], [timestamp_field("customer_txn_stats")])
    _hdel(client, reader, [NO_PROFILE], _view_fields(by_name["customer_profile"]))
    yield World(store, service, predictions, reader, client, written)
    client.close()


def _sample(seed: int, size: int) -> list[int]:
    """Random existing customers plus every special case, shuffled, with one repeat."""
    rnd = random.Random(seed)
    ids = [*rnd.sample(range(1, CUSTOMERS + 1), size), *NO_TXN, NO_TXN_TS, NO_PROFILE, STORED_ONLY, *UNKNOWN]
    ids.append(ids[0])
    rnd.shuffle(ids)
    return ids


def _feast_values(world: World, ids: list[int]) -> dict[str, list[Any]]:
    refs = [*world.service.refs, *(f"{world.predictions.name}:{name}" for name in STORED_FEATURES)]
    rows = [{"customer_id": i} for i in ids]
    return dict(world.store.get_online_features(features=refs, entity_rows=rows).to_dict())


def _same(ours: Any, theirs: Any) -> bool:
    return type(ours) is type(theirs) and ours == theirs


def _assert_rows_match_feast(world: World, ids: list[int], rows: list[OnlineRow]) -> None:
    """Values equal `get_online_features` by name; event times equal Feast's `online_read` per view."""
    assert [row.entity_id for row in rows] == ids
    feast = _feast_values(world, ids)
    assert feast["customer_id"] == ids
    for ref in world.service.refs:
        name = ref.split(":", 1)[1]
        assert all(_same(row.values[ref], value) for row, value in zip(rows, feast[name], strict=True)), ref
    for position, row in enumerate(rows):
        stored = row.stored
        theirs = [feast[name][position] for name in STORED_FEATURES]
        if stored is None:
            assert theirs == [None] * 4
        else:
            assert [stored.score, stored.model_version, stored.run_id] == theirs[:3]
            assert theirs[3] is not None
    keys = [EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=i)]) for i in ids]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for name in [*(view.name for view in world.service.views), world.predictions.name]:
        view = world.store.get_feature_view(name)
        read = RedisOnlineStore().online_read(world.store.config, view, keys)
        for row, (stamp, _) in zip(rows, read, strict=True):
            ours = (
                row.event_ts.get(name)
                if name != world.predictions.name
                else row.stored and row.stored.scored_at
            )
            assert stamp == (epoch if ours is None else ours), (row.entity_id, name)


def test_sync_read_equals_feasts_online_read(world: World) -> None:
    """For random customers, unknown ids, a repeat, and customers missing a view (or only its `_ts`),
    `read_sync` returns exactly Feast's values by name, None where Feast has None, and Feast's event times
    (Feast reports 1970-01-01 where the `_ts` field is missing; the reader says None)."""
    ids = _sample(1, 80)
    rows = world.reader.read_sync(world.client, ids)
    _assert_rows_match_feast(world, ids, rows)
    by_id = {row.entity_id: row for row in rows}
    assert by_id[NO_TXN[0]].event_ts["customer_txn_stats"] is None
    assert by_id[NO_TXN[0]].values["customer_txn_stats:txn_count_24h"] is None
    assert by_id[NO_TXN_TS].event_ts["customer_txn_stats"] is None
    assert by_id[NO_TXN_TS].values["customer_txn_stats:txn_count_24h"] is not None
    assert by_id[NO_PROFILE].event_ts["customer_profile"] is None
    assert by_id[NO_PROFILE].event_ts["customer_txn_stats"] is not None
    assert set(by_id[UNKNOWN[0]].values.values()) == {None}
    assert set(by_id[STORED_ONLY].values.values()) == {None}
    assert by_id[STORED_ONLY].stored is not None


def test_async_read_equals_feasts_online_read(world: World, stores: Stores) -> None:
    """`await read` (redis.asyncio) returns the same rows as `read_sync`, and so what Feast returns."""
    ids = _sample(2, 80)

    async def read() -> list[OnlineRow]:
        client = redis.asyncio.Redis.from_url(stores.redis.url())
        try:
            return await world.reader.read(client, ids)
        finally:
            await client.aclose()

    rows = asyncio.run(read())
    _assert_rows_match_feast(world, ids, rows)
    assert rows == world.reader.read_sync(world.client, ids)


class _Recorder:
    """Records what goes over a connection: ("send", HMGETs in the payload) and ("read",) events."""

    events: ClassVar[list[tuple[str, int]]] = []

    @classmethod
    def sent(cls, command: Any) -> None:
        payload = command if isinstance(command, bytes) else b"".join(bytes(part) for part in command)
        cls.events.append(("send", payload.count(b"$5\r\nHMGET\r\n")))


class _SyncConnection(redis.Connection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Recorder.sent(command)
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]  # untyped in redis-py

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        _Recorder.events.append(("read", 0))
        return super().read_response(*args, **kwargs)  # type: ignore[no-untyped-call]  # untyped in redis-py


class _AsyncConnection(redis.asyncio.Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Recorder.sent(command)
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        _Recorder.events.append(("read", 0))
        return await super().read_response(*args, **kwargs)


def test_one_round_trip_for_fifty_entities(world: World, stores: Stores) -> None:
    """k=50 entities: one send carrying 50 HMGETs, then 50 replies read — no other command, no second
    trip — with the sync and the async client (connections warmed up first: their handshake is excluded)."""
    endpoint = stores.redis
    ids = _sample(3, 40)
    assert len(ids) == 50
    expected = [("send", 50)] + [("read", 0)] * 50

    pool = redis.ConnectionPool(
        host=endpoint.host, port=endpoint.port, db=endpoint.db, connection_class=_SyncConnection
    )
    client = redis.Redis(connection_pool=pool)
    world.reader.read_sync(client, [1])
    _Recorder.events = []
    rows = world.reader.read_sync(client, ids)
    assert _Recorder.events == expected
    assert len(rows) == 50
    client.close()
    pool.disconnect()

    async def read_async() -> list[tuple[str, int]]:
        pool = redis.asyncio.ConnectionPool(
            host=endpoint.host, port=endpoint.port, db=endpoint.db, connection_class=_AsyncConnection
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            await world.reader.read(client, [1])
            _Recorder.events = []
            await world.reader.read(client, ids)
            return list(_Recorder.events)
        finally:
            await client.aclose()
            await pool.disconnect()

    assert asyncio.run(read_async()) == expected


def test_stored_predictions_are_parsed(world: World) -> None:
    """Score, model version, run id, scored_at (microseconds kept) and the snapshot times equal what was
    written; customers without a stored row get None."""
    ids = [*STORED[:50], STORED_ONLY, 2, 6, 400, *UNKNOWN]
    for row in world.reader.read_sync(world.client, ids):
        if row.entity_id not in world.written:
            assert row.stored is None, row.entity_id
            continue
        score, version, run_id, snapshot = world.written[row.entity_id]
        assert row.stored is not None
        assert row.stored.score == score
        assert row.stored.model_version == version
        assert row.stored.run_id == run_id
        assert row.stored.scored_at == SCORED_AT
        expected = {
            view: None if stamp is None else datetime.fromisoformat(stamp)
            for view, stamp in json.loads(snapshot).items()
        }
        assert row.stored.feature_snapshot_ts == expected
        assert row.stored.feature_snapshot_ts["customer_txn_stats"] is None or (
            row.stored.feature_snapshot_ts["customer_txn_stats"].tzinfo is UTC
        )


def test_error_reply_raises_and_the_client_stays_usable(world: World, stores: Stores) -> None:
    """A key that is not a hash (WRONGTYPE) raises ResponseError once every reply was read: the next read on
    the same client and connection returns correct rows (sync and async)."""
    bad = 10**13
    world.client.set(world.reader.key(bad), b"not a hash")
    try:
        expected = world.reader.read_sync(world.client, [1, 2])
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            world.reader.read_sync(world.client, [1, bad, 2])
        assert world.reader.read_sync(world.client, [1, 2]) == expected

        async def read_async() -> list[OnlineRow]:
            client = redis.asyncio.Redis.from_url(stores.redis.url(), max_connections=1)
            try:
                with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                    await world.reader.read(client, [1, bad, 2])
                return await world.reader.read(client, [1, 2])
            finally:
                await client.aclose()

        assert asyncio.run(read_async()) == expected
    finally:
        world.client.delete(world.reader.key(bad))


def test_unreachable_redis_raises_connection_error(world: World) -> None:
    """No server on the port: redis-py's ConnectionError (what the service maps to `online_unavailable`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        world.reader.read_sync(client, [1, 2])

    async def read_async() -> None:
        async_client = redis.asyncio.Redis(host="127.0.0.1", port=port, retry=AsyncRetry(NoBackoff(), 0))
        try:
            await world.reader.read(async_client, [1])
        finally:
            await async_client.aclose()

    with pytest.raises(redis.ConnectionError):
        asyncio.run(read_async())


def test_apply_ttl_equals_offline_retrieval(world: World) -> None:
    """Online rows with `apply_ttl(now=t)` equal `get_historical_features` at t (two days on, when some
    transaction rows have outlived their two-day TTL and others haven't), value for value."""
    as_of = END + timedelta(days=2) - timedelta(minutes=30)
    ids = [i for i in range(1, 151) if i not in {*NO_TXN, NO_TXN_TS, NO_PROFILE}]
    rows = [apply_ttl(row, world.service, now=as_of) for row in world.reader.read_sync(world.client, ids)]
    entity_df = pd.DataFrame({"customer_id": ids, "event_timestamp": [as_of] * len(ids)})
    offline = (
        world.store.get_historical_features(
            entity_df=entity_df, features=world.store.get_feature_service(world.service.name)
        )
        .to_df()
        .set_index("customer_id")
    )
    expired = 0
    for row in rows:
        expired += row.event_ts["customer_txn_stats"] is None
        for ref, ours in row.values.items():
            theirs = offline.loc[row.entity_id, ref.split(":", 1)[1]]
            if ours is None:
                assert pd.isna(theirs), (row.entity_id, ref)
            else:
                assert ours == theirs, (row.entity_id, ref)
    assert 0 < expired < len(rows)  # the TTL really cut, and not everything
