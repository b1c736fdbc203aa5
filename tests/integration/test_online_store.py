"""The online store's contract on real stores, for every transport we keep: `OnlineStore` (redis-py),
`AsyncOnlineStore` over `RespPool`, and over `Coalescer`. Reads return what Feast's own reader returns
(values by name, `_ts` event times, missing entities and views, stored predictions, TTL as offline
retrieval applies it), in one round trip; any Redis failure is StoreUnavailableError and the store stays
usable. Writes are compared with Feast's writer in `test_online_store_writes.py`."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import psycopg
import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from sqlalchemy import Engine

from core.batch.publish import PublishBatch, publish_rows
from core.endpoints import RedisEndpoint
from core.errors import StoreUnavailableError
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.features.keys import EntityKey as TandemKey
from core.features.snapshots import service_specs
from core.features.specs import ServiceSpec, ViewSpec
from core.online import resp_pool
from core.online.async_store import AsyncOnlineStore
from core.online.coalesce import Coalescer
from core.online.encoding import feature_field, timestamp_field
from core.online.resp_pool import RespPool
from core.online.rows import STORED_FEATURES, FeatureColumn, FeatureRows, OnlineRow, apply_ttl
from core.online.store import OnlineStore
from core.online.wire import ReadLayout
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_PREDICTIONS_VIEW
from tests.servers import free_port

__all__ = ["TRANSPORTS", "StoreUnderTest"]

TRANSPORTS = ("sync", "resp_pool", "coalescer")
T = TypeVar("T")


class _RecordingConnection(redis.Connection):
    """A redis-py connection that logs each send as [HMGETs in it, replies read since]."""

    log: list[list[int]]

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        payload = command if isinstance(command, bytes) else b"".join(bytes(part) for part in command)
        self.log.append([payload.count(b"$5\r\nHMGET\r\n"), 0])
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]  # untyped

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self.log[-1][1] += 1
        return super().read_response(*args, **kwargs)  # type: ignore[no-untyped-call]  # untyped


class StoreUnderTest:
    """One transport of the online store behind one synchronous facade: the async stores run on an event
    loop of their own (their pool's connections belong to it). `sync` is the OnlineStore, for the
    operations only it has (write, delete, purge); `wire` logs each round trip as [HMGETs, replies]."""

    def __init__(self, transport: str, endpoint: RedisEndpoint, *, project: str) -> None:
        self.transport = transport
        self.wire: list[list[int]] = []
        self.sync: OnlineStore | None = None
        self._async: AsyncOnlineStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: RespPool | None = None
        if transport == "sync":
            wire = self.wire
            recording = type("Recording", (_RecordingConnection,), {"log": wire})
            pool = redis.ConnectionPool(
                host=endpoint.host,
                port=endpoint.port,
                db=endpoint.db,
                username=endpoint.username or None,
                password=endpoint.password or None,
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
                connection_class=recording,
            )
            self.sync = OnlineStore(redis.Redis(connection_pool=pool), project=project)
        else:
            self._loop = asyncio.new_event_loop()
            self._pool = RespPool(endpoint, timeout_s=5.0)
            transport_ = Coalescer(self._pool) if transport == "coalescer" else self._pool
            self._async = AsyncOnlineStore(transport_, project=project)

    def _run(self, step: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return self._loop.run_until_complete(step)

    def read(self, layout: ReadLayout, entity_ids: Sequence[int]) -> list[OnlineRow]:
        """`read` of this transport."""
        if self.sync is not None:
            return self.sync.read(layout, entity_ids)
        assert self._async is not None
        return self._run(self._async.read(layout, entity_ids))

    def write_newer(self, rows: FeatureRows) -> int:
        """`write_newer` of this transport."""
        if self.sync is not None:
            return self.sync.write_newer(rows)
        assert self._async is not None
        return self._run(self._async.write_newer(rows))

    def close(self) -> None:
        """Close the client or the pool and its loop."""
        if self.sync is not None:
            self.sync.close()
        if self._pool is not None and self._loop is not None:
            self._run(self._pool.close())
            self._loop.close()


NOW = datetime.now(UTC)
END = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
CUSTOMERS = 500
STORED = list(range(1, 400, 2))  # customers with a stored prediction
INCOMPLETE = STORED[-1]  # a stored prediction whose run_id field was removed
STORED_ONLY = CUSTOMERS + 7  # a stored prediction and no features
NO_TXN = [4, 10, 16]  # the transaction view removed entirely
NO_TXN_TS = 22  # only `_ts:customer_txn_stats` removed: Feast still returns the stored values
NO_PROFILE = 28  # the profile view removed entirely
UNKNOWN = [CUSTOMERS + 1, 10**12, -5]
SCORED_AT = NOW.replace(microsecond=123_457) - timedelta(minutes=20)


@dataclass(frozen=True)
class World:
    """The module's Feast store, specs, read layout, a redis-py client and the stored predictions written."""

    store: Any
    service: ServiceSpec
    predictions: ViewSpec
    layout: ReadLayout
    project: str
    client: redis.Redis
    written: dict[int, tuple[float, str, str, str]]  # id -> (score, model_version, run_id, snapshot JSON)


def _publish(online: OnlineStore, predictions: ViewSpec) -> dict[int, tuple[float, str, str, str]]:
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
    publish_rows(online, view=predictions, batch=batch, chunk_rows=64)
    return {
        i: (score, batch.model_version, batch.run_id, snapshot)
        for i, score, snapshot in zip(ids.tolist(), batch.scores.tolist(), snapshots, strict=True)
    }


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> Iterator[World]:
    """500 customers x 3 days reseeded and materialized; stored predictions for odd ids < 400 (one of them
    incomplete) and one id without features; the transaction view (or its `_ts` only, or the profile view)
    removed for a few with `OnlineStore.delete`."""
    apply_feature_repo(settings, stores)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=CUSTOMERS, days=3, seed=21, end=END)
    service, predictions = service_specs(
        settings, stores, feature_service=DEMO_FEATURE_SERVICE, predictions_view=DEMO_PREDICTIONS_VIEW
    )
    layout = ReadLayout(project=settings.feast_project, service=service, predictions=predictions)
    client = redis.Redis.from_url(stores.redis.url())
    # Other modules of the session wrote these customers' hashes; Feast's materialization skips a row whose
    # event time is not newer than the stored one, so reseeded rows at the same times would not replace them.
    client.delete(*(layout.key(i) for i in range(1, CUSTOMERS + 20)))
    store = open_feature_store(settings, stores)
    # A full-range materialization of the service's views: an incremental one would skip reseeded rows older
    # than an earlier module's materialization, and batch_predictions' source holds other modules' runs.
    views = [view.name for view in service.views]
    store.materialize(start_date=END - timedelta(days=4), end_date=NOW, feature_views=views)
    by_name = {view.name: view for view in service.views}
    online = OnlineStore(redis.Redis.from_url(stores.redis.url()), project=settings.feast_project)
    written = _publish(online, predictions)
    assert online.delete(by_name["customer_txn_stats"], np.array(NO_TXN, dtype=np.int64)) == len(NO_TXN)
    online.delete(by_name["customer_profile"], np.array([NO_PROFILE], dtype=np.int64))
    online.close()
    client.hdel(layout.key(NO_TXN_TS), timestamp_field("customer_txn_stats"))  # type: ignore[arg-type]  # bytes key
    client.hdel(layout.key(INCOMPLETE), feature_field(predictions.name, "run_id"))  # type: ignore[arg-type]  # bytes key
    yield World(store, service, predictions, layout, settings.feast_project, client, written)
    client.close()


@pytest.fixture(params=TRANSPORTS)
def store(request: pytest.FixtureRequest, stores: Stores, settings: Settings) -> Iterator[StoreUnderTest]:
    """The online store of this session's project over each transport."""
    under_test = StoreUnderTest(request.param, stores.redis, project=settings.feast_project)
    yield under_test
    under_test.close()


def _sample(seed: int, size: int) -> list[int]:
    """Random existing customers plus every special case, shuffled, with one repeat."""
    rnd = random.Random(seed)
    specials = [*NO_TXN, NO_TXN_TS, NO_PROFILE, STORED_ONLY, INCOMPLETE, *UNKNOWN]
    ids = [*rnd.sample(sorted(set(range(1, CUSTOMERS + 1)) - set(specials)), size), *specials]
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
    """Values equal `get_online_features` by name; event times equal Feast's `online_read` per view; the
    stored prediction is Feast's four values, or None where Feast lacks one of them."""
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
            assert None in theirs, row.entity_id
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
            if row.entity_id == INCOMPLETE and name == world.predictions.name:
                assert ours is None  # incomplete: no stored prediction at all
                assert stamp == SCORED_AT
                continue
            assert stamp == (epoch if ours is None else ours), (row.entity_id, name)


def test_read_equals_feasts_online_read(world: World, store: StoreUnderTest) -> None:
    """For random customers, unknown ids, a repeat, customers missing a view (or only its `_ts`) and an
    incomplete stored prediction, `read` returns exactly Feast's values by name, None where Feast has None,
    and Feast's event times (Feast reports 1970-01-01 where `_ts` is missing; we say None)."""
    ids = _sample(1, 80)
    rows = store.read(world.layout, ids)
    _assert_rows_match_feast(world, ids, rows)
    by_id = {row.entity_id: row for row in rows}
    assert by_id[NO_TXN[0]].event_ts["customer_txn_stats"] is None
    assert by_id[NO_TXN[0]].values["customer_txn_stats:txn_count_24h"] is None
    assert by_id[NO_TXN[0]].event_ts["customer_profile"] is not None
    assert by_id[NO_TXN_TS].event_ts["customer_txn_stats"] is None
    assert by_id[NO_TXN_TS].values["customer_txn_stats:txn_count_24h"] is not None
    assert by_id[NO_PROFILE].event_ts["customer_profile"] is None
    assert by_id[NO_PROFILE].event_ts["customer_txn_stats"] is not None
    assert set(by_id[UNKNOWN[0]].values.values()) == {None}
    assert set(by_id[UNKNOWN[0]].event_ts.values()) == {None}
    assert by_id[UNKNOWN[0]].stored is None
    assert set(by_id[STORED_ONLY].values.values()) == {None}
    assert by_id[STORED_ONLY].stored is not None
    assert by_id[INCOMPLETE].stored is None
    batched = OnlineStore(world.client, project=world.project).read(world.layout, ids, batch=7)
    assert rows == batched  # sync reads in batches of 7: the same rows


def test_stored_predictions_are_parsed(world: World, store: StoreUnderTest) -> None:
    """Score, model version, run id, scored_at (microseconds kept) and the snapshot times equal what was
    written; customers without a stored row, or with an incomplete one, get None."""
    ids = [*STORED[:50], STORED_ONLY, INCOMPLETE, 2, 6, 400, *UNKNOWN]
    rows = store.read(world.layout, ids)
    assert sum(row.stored is not None for row in rows) == 51
    for row in rows:
        if row.entity_id not in world.written or row.entity_id == INCOMPLETE:
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


def test_one_round_trip_for_fifty_entities(
    world: World, store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k=50 entities: one send carrying 50 HMGETs, then 50 replies read, no other command and no second
    trip (the connection is warmed up first: its handshake is excluded)."""
    original = resp_pool._Connection.round_trip

    async def recorded(connection: Any, payload: bytes, replies: int) -> list[Any]:
        store.wire.append([payload.count(b"$5\r\nHMGET\r\n"), replies])
        return await original(connection, payload, replies)

    monkeypatch.setattr(resp_pool._Connection, "round_trip", recorded)
    ids = _sample(3, 39)
    assert len(ids) == 50
    store.read(world.layout, [1])
    store.wire.clear()
    rows = store.read(world.layout, ids)
    assert store.wire == [[50, 50]]
    assert [row.entity_id for row in rows] == ids


def test_error_reply_raises_and_the_store_stays_usable(world: World, store: StoreUnderTest) -> None:
    """A key that is not a hash (WRONGTYPE) raises StoreUnavailableError (Redis's error chained) once every
    reply was read: the next read on the same store returns correct rows."""
    bad = 10**13
    world.client.set(world.layout.key(bad), b"not a hash")
    try:
        expected = store.read(world.layout, [1, 2])
        with pytest.raises(StoreUnavailableError, match="WRONGTYPE") as raised:
            store.read(world.layout, [1, bad, 2])
        assert isinstance(raised.value.__cause__, redis.ResponseError)
        assert store.read(world.layout, [1, 2]) == expected
        assert expected[0].event_ts["customer_profile"] is not None
    finally:
        world.client.delete(world.layout.key(bad))


def test_undecodable_bytes_raise_store_unavailable(world: World, store: StoreUnderTest) -> None:
    """A `_ts` field holding bytes that are not a Feast timestamp: StoreUnavailableError, not a crash."""
    bad = 10**13 + 1
    world.client.hset(world.layout.key(bad), timestamp_field("customer_profile"), b"\xff\xfe")  # type: ignore[arg-type]  # bytes key
    try:
        with pytest.raises(StoreUnavailableError, match="Feast's layout"):
            store.read(world.layout, [1, bad])
        assert store.read(world.layout, [1])[0].event_ts["customer_profile"] is not None
    finally:
        world.client.delete(world.layout.key(bad))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unreachable_redis_raises_store_unavailable_quickly(world: World, transport: str) -> None:
    """No server on the port: StoreUnavailableError naming Redis, for reads and writes, well within a
    second (a refused connection is not waited on)."""
    down = StoreUnderTest(transport, RedisEndpoint("127.0.0.1", free_port()), project="nowhere")
    rows = FeatureRows(
        view="v",
        key=TandemKey.single("customer_id"),
        entity_ids=np.array([1], dtype=np.int64),
        columns=(FeatureColumn("score", "float64", np.zeros(1)),),
        event_timestamps=NOW,
    )
    try:
        start = time.perf_counter()
        with pytest.raises(StoreUnavailableError, match="Redis"):
            down.read(world.layout, [1, 2])
        with pytest.raises(StoreUnavailableError, match="Redis"):
            down.write_newer(rows)
        assert time.perf_counter() - start < 1.0
    finally:
        down.close()


def test_apply_ttl_equals_offline_retrieval(world: World, store: StoreUnderTest) -> None:
    """Online rows with `apply_ttl(now=t)` equal `get_historical_features` at t (two days on, when some
    transaction rows have outlived their two-day TTL and others haven't), value for value."""
    as_of = END + timedelta(days=2) - timedelta(minutes=30)
    ids = [i for i in range(1, 151) if i not in {*NO_TXN, NO_TXN_TS, NO_PROFILE}]
    rows = [apply_ttl(row, world.service, now=as_of) for row in store.read(world.layout, ids)]
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
