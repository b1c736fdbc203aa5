"""The online store's writes on a real Redis, for every write path we keep (`OnlineStore.write`, and
`write_newer` over redis-py, RespPool and Coalescer): the same bytes as Feast's writer, readable by Feast,
newer-wins exactly as Feast's dedup, errors as StoreUnavailableError; plus `delete` and `purge`."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import redis
from feast import Entity, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.infra.online_stores.helpers import _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.passthrough_provider import PassthroughProvider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Bool, Float64, Int64, String

from core.endpoints import RedisEndpoint
from core.errors import StoreUnavailableError
from core.features.keys import EntityKey as TandemKey
from core.features.specs import FeatureSpec, ViewSpec
from core.online.encoding import feature_field, timestamp_field
from core.online.keys import encode_entity_keys
from core.online.newer_wins import NEWER_WINS_SHA
from core.online.rows import FeatureColumn, FeatureRows
from tests.integration.test_online_store import TRANSPORTS, StoreUnderTest

VIEW = "owtest_view"
JOIN_KEY = "customer_id"
WRITES = ("sync.write", *(f"{transport}.write_newer" for transport in TRANSPORTS))
T0 = np.datetime64("2026-05-02T00:00:00", "ns")

ProjectFactory = Callable[[], str]


@pytest.fixture(scope="module")
def endpoint(servers: tuple[object, RedisEndpoint]) -> RedisEndpoint:
    """The test Redis."""
    return servers[1]


@pytest.fixture(scope="module")
def client(endpoint: RedisEndpoint) -> Iterator[redis.Redis]:
    """A redis-py client on the test Redis, for setting up and inspecting hashes."""
    connection = redis.Redis.from_url(endpoint.url())
    yield connection
    connection.close()


@pytest.fixture
def new_project(client: redis.Redis) -> Iterator[ProjectFactory]:
    """Hands out unique Feast project names; every key of every one of them is deleted afterwards."""
    projects: list[str] = []

    def make() -> str:
        projects.append(f"ow{uuid.uuid4().hex[:12]}")
        return projects[-1]

    yield make
    for project in projects:
        keys = list(client.scan_iter(match=f"*{project}", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


class Writer:
    """One write path: `write(project, rows)` on a store per project, opened on first use."""

    def __init__(self, path: str, endpoint: RedisEndpoint) -> None:
        self.path = path
        self.transport, self.method = path.split(".")
        self.endpoint = endpoint
        self.stores: dict[str, StoreUnderTest] = {}

    def store(self, project: str) -> StoreUnderTest:
        """The store of `project` on this path's transport."""
        if project not in self.stores:
            self.stores[project] = StoreUnderTest(self.transport, self.endpoint, project=project)
        return self.stores[project]

    def write(self, project: str, rows: FeatureRows) -> int:
        """Write `rows` the way this path does (`write` in batches of 64 rows)."""
        store = self.store(project)
        if self.method == "write":
            assert store.sync is not None
            return store.sync.write(rows, batch_rows=64)
        return store.write_newer(rows)

    def close(self) -> None:
        """Close every store opened."""
        for store in self.stores.values():
            store.close()


@pytest.fixture(params=WRITES)
def writer(request: pytest.FixtureRequest, endpoint: RedisEndpoint) -> Iterator[Writer]:
    """Each write path."""
    path = Writer(request.param, endpoint)
    yield path
    path.close()


def _view(name: str = VIEW, features: dict[str, Any] | None = None) -> FeatureView:
    customer = Entity(name="customer", join_keys=[JOIN_KEY], value_type=ValueType.INT64)
    source = FileSource(name=f"{name}_source", path="unused.parquet", timestamp_field="event_timestamp")
    schema = features or {"score": Float64, "visits": Int64, "total": Int64, "label": String, "flag": Bool}
    return FeatureView(
        name=name,
        entities=[customer],
        ttl=timedelta(days=7),
        schema=[Field(name=JOIN_KEY, dtype=Int64), *(Field(name=k, dtype=v) for k, v in schema.items())],
        online=True,
        source=source,
    )


def _config(
    project: str, endpoint: RedisEndpoint, tmp_path: Path, key_ttl_s: int | None = None
) -> RepoConfig:
    return RepoConfig(
        project=project,
        provider="local",
        registry=str(tmp_path / "registry.db"),
        online_store={
            "type": "redis",
            "connection_string": endpoint.feast_connection_string(),
            "key_ttl_seconds": key_ttl_s,
        },
        entity_key_serialization_version=3,
    )


def _frame(n: int, seed: int = 7) -> pd.DataFrame:
    """Random rows with every awkward value: nulls, int64 extremes, unicode, nanosecond timestamps."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 2**63 - 1, size=n, dtype=np.int64)
    ids[:3] = [1, 2**63 - 1, 2**31][:n]
    score = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, size=n)
    score[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324][:n]
    score[rng.random(n) < 0.1] = np.nan
    total = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64, endpoint=True)
    total[:5] = [-(2**63), 2**63 - 1, 0, -1, 127][:n]
    visits: list[int | None] = [None if rng.random() < 0.2 else int(v) for v in rng.integers(0, 10**6, n)]
    alphabet = ["a", "é", "日本", "🙂", " ", "\x00", "z" * 50]
    label: list[str | None] = [
        None if rng.random() < 0.1 else "".join(rng.choice(alphabet, size=rng.integers(0, 12)).tolist())
        for _ in range(n)
    ]
    label[:4] = ["", "x" * 127, "y" * 128, "ü" * 9000][:n]
    flag: list[bool | None] = [None if rng.random() < 0.2 else bool(rng.random() < 0.5) for _ in range(n)]
    base = np.datetime64("2026-05-01T12:00:00", "ns")
    stamps = base + rng.integers(0, 10**15, size=n).astype("timedelta64[ns]")
    stamps[:2] = [base, base + np.timedelta64(999, "ns")][:n]
    return pd.DataFrame(
        {
            JOIN_KEY: ids,
            "score": score,
            "visits": pd.array(visits, dtype="Int64"),
            "total": total,
            "label": label,
            "flag": pd.array(flag, dtype="boolean"),
            "event_timestamp": stamps,
        }
    )


def _ids(df: pd.DataFrame) -> npt.NDArray[np.int64]:
    return df[JOIN_KEY].to_numpy(dtype=np.int64)


def _rows(df: pd.DataFrame, *, key_ttl_s: int | None = None) -> FeatureRows:
    """The frame as FeatureRows of VIEW (the same values Feast's writer is given)."""
    return FeatureRows(
        view=VIEW,
        key=TandemKey.single(JOIN_KEY),
        entity_ids=_ids(df),
        columns=(
            FeatureColumn("score", "float64", df["score"].to_numpy()),
            FeatureColumn("visits", "int64", [None if pd.isna(v) else int(v) for v in df["visits"]]),
            FeatureColumn("total", "int64", df["total"].to_numpy()),
            FeatureColumn("label", "string", df["label"].tolist()),
            FeatureColumn("flag", "bool", [None if pd.isna(v) else bool(v) for v in df["flag"]]),
        ),
        event_timestamps=df["event_timestamp"].to_numpy(dtype="datetime64[ns]"),
        key_ttl_s=key_ttl_s,
    )


def _keys(project: str, df: pd.DataFrame) -> list[bytes]:
    return encode_entity_keys(join_key=JOIN_KEY, entity_ids=_ids(df), project=project)


def _hgetall(client: redis.Redis, key: bytes) -> dict[bytes, bytes]:
    """HGETALL of a binary key (redis-py annotates hash names as str, though it sends bytes as they are)."""
    return cast("dict[bytes, bytes]", client.hgetall(key))  # type: ignore[arg-type]


def _hashes(client: redis.Redis, keys: list[bytes]) -> list[dict[bytes, bytes]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)  # type: ignore[arg-type]  # redis-py annotates str; bytes keys work
    return cast("list[dict[bytes, bytes]]", pipe.execute())


def _ttl(client: redis.Redis, key: bytes) -> int:
    return cast(int, client.ttl(key))


def _feast_write(config: RepoConfig, view: FeatureView, df: pd.DataFrame) -> None:
    """What `FeatureStore.write_to_online_store` does, minus the registry lookup (dedup on)."""
    rows = PassthroughProvider._prep_rows_to_write_for_ingestion(view, df)
    RedisOnlineStore().online_write_batch(config, view, rows, None)


def _entity_key(entity_id: int) -> Any:
    return EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(int64_val=entity_id)])


@pytest.mark.filterwarnings("ignore:Discarding nonzero nanoseconds")
def test_bytes_equal_feasts_writer(
    writer: Writer, client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory, tmp_path: Path
) -> None:
    """Per entity, our hash (fields and bytes, `_ts:` and nulls included) equals Feast's; keys are
    `_redis_key`; no key TTL unless asked."""
    df = _frame(3_000)
    feast_project, our_project = new_project(), new_project()
    _feast_write(_config(feast_project, endpoint, tmp_path), _view(), df)
    assert writer.write(our_project, _rows(df)) == len(df)

    ours = _keys(our_project, df)
    theirs = [_redis_key(feast_project, _entity_key(entity_id)) for entity_id in _ids(df).tolist()]
    for entity_id, our_key in zip(_ids(df).tolist(), ours, strict=True):
        assert our_key == _redis_key(our_project, _entity_key(entity_id), entity_key_serialization_version=3)
    their_hashes, our_hashes = _hashes(client, theirs), _hashes(client, ours)
    for index, (their_hash, our_hash) in enumerate(zip(their_hashes, our_hashes, strict=True)):
        assert len(their_hash) == 6
        assert our_hash == their_hash, f"row {index}"
    assert b"" in {value for reply in our_hashes for value in reply.values()}  # nulls were really compared
    assert _ttl(client, ours[0]) == -1


def test_key_ttl_is_set_like_feast(
    writer: Writer, client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory, tmp_path: Path
) -> None:
    """With `key_ttl_s`, every written key gets the same EXPIRE Feast's `key_ttl_seconds` gives."""
    df = _frame(50).assign(event_timestamp=T0)
    feast_project, our_project = new_project(), new_project()
    _feast_write(_config(feast_project, endpoint, tmp_path, key_ttl_s=3_600), _view(), df)
    writer.write(our_project, _rows(df, key_ttl_s=3_600))
    for entity_id, key in zip(_ids(df).tolist(), _keys(our_project, df), strict=True):
        feast_key = _redis_key(feast_project, _entity_key(entity_id))
        assert 3_590 <= _ttl(client, key) <= 3_600
        assert 3_590 <= _ttl(client, feast_key) <= 3_600
        assert _hgetall(client, key) == _hgetall(client, feast_key)


def test_feast_reads_what_we_wrote(
    writer: Writer, endpoint: RedisEndpoint, new_project: ProjectFactory, tmp_path: Path
) -> None:
    """`RedisOnlineStore.online_read` returns our values (nulls as empty Values) and microsecond timestamps."""
    df = _frame(200, seed=11)
    project = new_project()
    writer.write(project, _rows(df))
    results = RedisOnlineStore().online_read(
        _config(project, endpoint, tmp_path), _view(), [_entity_key(i) for i in _ids(df).tolist()]
    )
    visits = [None if pd.isna(v) else int(v) for v in df["visits"]]
    flags = [None if pd.isna(v) else bool(v) for v in df["flag"]]
    stamps = df["event_timestamp"].to_numpy(dtype="datetime64[ns]")
    expected = zip(
        stamps, df["score"].tolist(), df["total"].tolist(), visits, df["label"], flags, strict=True
    )
    for (timestamp, values), (stamp, score, total, visit, label, flag) in zip(results, expected, strict=True):
        assert timestamp is not None
        assert values is not None
        expected_ts = pd.Timestamp(stamp).floor("us").tz_localize("UTC").to_pydatetime()
        assert abs(timestamp - expected_ts) < timedelta(microseconds=1)  # Feast reads seconds as a float
        assert values["score"].WhichOneof("val") == (None if math.isnan(score) else "double_val")
        assert math.isnan(score) or values["score"].double_val == score
        assert values["total"].int64_val == total
        assert values["visits"].WhichOneof("val") == (None if visit is None else "int64_val")
        assert values["visits"].int64_val == (visit or 0)
        assert values["label"].WhichOneof("val") == (None if label is None else "string_val")
        assert values["label"].string_val == (label or "")
        assert values["flag"].WhichOneof("val") == (None if flag is None else "bool_val")
        assert values["flag"].bool_val == bool(flag)


def test_other_views_fields_survive(
    writer: Writer, client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory, tmp_path: Path
) -> None:
    """Writing view X into hashes that hold view Y leaves Y's fields alone; X's fields are what the same
    write gives in an empty project."""
    project, expected_project = new_project(), new_project()
    df = _frame(20, seed=3).assign(event_timestamp=T0)
    other = _view("owtest_other", {"x": Float64})
    _feast_write(_config(project, endpoint, tmp_path), other, df[[JOIN_KEY, "event_timestamp"]].assign(x=1.5))
    before = _hashes(client, _keys(project, df))
    assert all(len(fields) == 2 for fields in before)

    assert writer.write(project, _rows(df)) == len(df)
    writer.write(expected_project, _rows(df))
    for now, other_fields, expected in zip(
        _hashes(client, _keys(project, df)), before, _hashes(client, _keys(expected_project, df)), strict=True
    ):
        assert {k: now[k] for k in other_fields} == other_fields
        assert {k: v for k, v in now.items() if k not in other_fields} == expected


def test_write_always_overwrites(
    client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory
) -> None:
    """`OnlineStore.write` (a batch run's publication) replaces the online row even with an older one."""
    writer = Writer("sync.write", endpoint)
    project, expected_project = new_project(), new_project()
    try:
        newer = _frame(20, seed=3).assign(event_timestamp=T0)
        older = _frame(20, seed=4).assign(event_timestamp=T0 - np.timedelta64(1, "D"))
        older[JOIN_KEY] = newer[JOIN_KEY]
        writer.write(project, _rows(newer))
        assert writer.write(project, _rows(older)) == 20
        writer.write(expected_project, _rows(older))
        assert _hashes(client, _keys(project, newer)) == _hashes(client, _keys(expected_project, newer))
    finally:
        writer.close()


@pytest.mark.filterwarnings("ignore:Discarding nonzero nanoseconds")
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_write_newer_equals_feasts_dedup(
    transport: str, client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory, tmp_path: Path
) -> None:
    """Over hashes Feast wrote at t0, an update with older, equal, 1 µs older/newer, newer and unseen rows
    (and repeated entities in the batch) leaves exactly the hashes Feast's own deduplicating write leaves:
    an older or equal event time never replaces the online row, a newer one does."""
    base = _frame(40, seed=5).assign(event_timestamp=T0)
    feast_project, our_project = new_project(), new_project()
    for project in (feast_project, our_project):
        _feast_write(_config(project, endpoint, tmp_path), _view(), base)
    update = _frame(60, seed=6)
    ids, stamps = _ids(update).copy(), update["event_timestamp"].to_numpy(dtype="datetime64[ns]").copy()
    us, day = np.timedelta64(1, "us"), np.timedelta64(1, "D")
    ids[:40] = _ids(base)
    stamps[0:10] = T0 - day  # older: skipped
    stamps[10:20] = T0  # equal: skipped
    stamps[20:25] = T0 - us  # a microsecond older: skipped
    stamps[25:30] = T0 + us  # a microsecond newer: written
    stamps[30:40] = T0 + day  # newer: written
    # 40:50 unseen ids: written
    ids[50:55], stamps[50:55] = ids[30:35], T0 + day / 2  # newer than stored, older than the batch's: skipped
    ids[55:60], stamps[55:60] = ids[40:45], stamps[40:45] + us  # newer than the batch's: written
    update = update.assign(**{JOIN_KEY: ids, "event_timestamp": stamps})

    base_hashes = _hashes(client, _keys(our_project, base))
    _feast_write(_config(feast_project, endpoint, tmp_path), _view(), update)
    store = StoreUnderTest(transport, endpoint, project=our_project)
    try:
        assert store.write_newer(_rows(update)) == 5 + 10 + 10 + 5
    finally:
        store.close()
    theirs, ours = _hashes(client, _keys(feast_project, update)), _hashes(client, _keys(our_project, update))
    assert ours == theirs
    assert ours[:25] == base_hashes[:25]  # really kept
    assert all(
        now != then for now, then in zip(ours[25:40], base_hashes[25:40], strict=True)
    )  # really replaced


def test_progress_batches_and_empty_input(
    writer: Writer, endpoint: RedisEndpoint, new_project: ProjectFactory
) -> None:
    """No rows is a no-op returning 0 on every path; `write`'s `progress` gets each acknowledged batch's
    row count and it returns the row count."""
    df = _frame(7)
    project = new_project()
    assert writer.write(project, _rows(df).take([])) == 0
    store = writer.store(project)
    if store.sync is not None:
        seen: list[int] = []
        assert store.sync.write(_rows(df), batch_rows=3, progress=seen.append) == 7
        assert seen == [3, 3, 1]
        with pytest.raises(ValueError, match="batch_rows"):
            store.sync.write(_rows(df), batch_rows=0)


def test_redis_error_raises_and_store_stays_usable(
    writer: Writer, client: redis.Redis, new_project: ProjectFactory
) -> None:
    """A command Redis rejects (WRONGTYPE: a key that is not a hash) raises StoreUnavailableError with
    Redis's error chained; `write` has written the batches before it, `write_newer` every other entity
    (each entity's compare-and-set is its own script) and left the bad key as it was; the same store then
    writes fine."""
    project = new_project()
    df = _frame(10)
    keys = _keys(project, df)
    client.set(keys[4], b"not a hash")
    rows = _rows(df)
    sync = writer.store(project).sync

    def write() -> int:
        if sync is not None and writer.method == "write":
            return sync.write(rows, batch_rows=4)
        return writer.write(project, rows)

    with pytest.raises(StoreUnavailableError, match="WRONGTYPE") as raised:
        write()
    assert isinstance(raised.value.__cause__, redis.ResponseError)
    written = [bool(client.exists(key)) for key in keys[:4]]
    assert written == [True] * 4
    if writer.method == "write_newer":
        assert all(client.exists(key) for key in keys[5:])
    assert client.get(keys[4]) == b"not a hash"
    fine = rows.take([0, 1, 2, 3, 5])
    assert writer.write(project, fine) == (5 if writer.method == "write" else 0)  # newer-wins: already there
    assert all(client.exists(key) for key in [*keys[:4], keys[5]])


def _view_spec(name: str, *features: str) -> ViewSpec:
    return ViewSpec(
        name=name,
        table=name,
        key=TandemKey.single(JOIN_KEY),
        timestamp_field="event_timestamp",
        created_field=None,
        ttl_s=0,
        features=tuple(FeatureSpec(feature, "float64") for feature in features),
    )


def test_delete_removes_one_views_fields(
    client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory, tmp_path: Path
) -> None:
    """`delete(view, ids)` removes that view's features and `_ts` from those entities' hashes only: other
    views' fields and other entities stay; Feast then reads those entities as missing that view."""
    project = new_project()
    df = _frame(6).assign(event_timestamp=T0)
    config = _config(project, endpoint, tmp_path)
    other = _view("owtest_other", {"x": Float64})
    _feast_write(config, other, df[[JOIN_KEY, "event_timestamp"]].assign(x=1.5))
    writer = Writer("sync.write", endpoint)
    try:
        writer.write(project, _rows(df))
        before = _hashes(client, _keys(project, df))
        store = writer.store(project).sync
        assert store is not None
        spec = _view_spec(VIEW, "score", "visits", "total", "label", "flag")
        assert store.delete(spec, _ids(df)[:2]) == 2
        assert store.delete(spec, _ids(df)[:0]) == 0
    finally:
        writer.close()
    after = _hashes(client, _keys(project, df))
    other_fields = {timestamp_field("owtest_other"), feature_field("owtest_other", "x")}
    assert [set(fields) for fields in after[:2]] == [other_fields, other_fields]
    assert all(after[i] == {k: before[i][k] for k in other_fields} for i in range(2))
    assert after[2:] == before[2:]
    assert all(len(fields) == 8 for fields in after[2:])
    keys = [_entity_key(i) for i in _ids(df).tolist()]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    read = RedisOnlineStore().online_read(config, _view(), keys)
    for position, (stamp, values) in enumerate(read):  # Feast: epoch and empty Values where no row is
        assert values is not None
        assert (stamp == epoch) is (position < 2)
        assert all(value.WhichOneof("val") is None for value in values.values()) is (position < 2)
    assert all(values is not None for _, values in RedisOnlineStore().online_read(config, other, keys))


def test_purge_deletes_exactly_the_projects_keys(
    client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory
) -> None:
    """`purge()` deletes every key of its project (any view, any join key) and returns how many; another
    project's keys and keys that are not Feast's stay."""
    project, neighbour = new_project(), new_project()
    df = _frame(2_500)
    writer = Writer("sync.write", endpoint)
    stranger = f"tandem-test:{uuid.uuid4().hex}"
    client.set(stranger, b"keep me")
    try:
        writer.write(project, _rows(df))
        writer.write(neighbour, _rows(df))
        accounts = FeatureRows(
            view="accounts",
            key=TandemKey.single("account_id"),
            entity_ids=np.arange(10, dtype=np.int64),
            columns=(FeatureColumn("x", "float64", np.zeros(10)),),
            event_timestamps=T0.astype("datetime64[us]").item(),
        )
        writer.write(project, accounts)
        store = writer.store(project).sync
        assert store is not None
        assert store.purge(batch=300) == 2_510
        assert list(client.scan_iter(match=f"*{project}", count=1000)) == []
        assert all(client.exists(key) for key in _keys(neighbour, df))
        assert client.get(stranger) == b"keep me"
        assert store.purge() == 0
    finally:
        writer.close()
        client.delete(stranger)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_write_newer_loads_its_script_after_a_flush(
    transport: str, client: redis.Redis, endpoint: RedisEndpoint, new_project: ProjectFactory
) -> None:
    """`write_newer` sends EVALSHA; after `SCRIPT FLUSH` Redis answers NOSCRIPT and the store resends by
    body (EVAL): the rows are written, once, and the script is cached again."""
    project, expected_project = new_project(), new_project()
    df = _frame(30, seed=9)
    store = StoreUnderTest(transport, endpoint, project=project)
    try:
        client.script_flush()
        assert store.write_newer(_rows(df)) == 30
        assert client.script_exists(NEWER_WINS_SHA.decode()) == [True]
        assert store.write_newer(_rows(df)) == 0  # the same event times again: nothing newer
    finally:
        store.close()
    reference = Writer("sync.write", endpoint)
    try:
        reference.write(expected_project, _rows(df))
    finally:
        reference.close()
    assert _hashes(client, _keys(project, df)) == _hashes(client, _keys(expected_project, df))
