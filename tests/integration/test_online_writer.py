"""The fast online writer against a real Redis: the same bytes as Feast's writer, readable by Feast."""

from __future__ import annotations

import math
import os
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

from core.endpoints import parse_redis_url
from core.online.writer import FeatureColumn, encode_entity_keys, write_feature_rows

REDIS_URL = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
VIEW = "owtest_view"
JOIN_KEY = "customer_id"

ProjectFactory = Callable[[], str]


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    """A redis-py client on the test Redis."""
    connection = redis.Redis.from_url(REDIS_URL)
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


def _config(project: str, tmp_path: Path, key_ttl_seconds: int | None = None) -> RepoConfig:
    return RepoConfig(
        project=project,
        provider="local",
        registry=str(tmp_path / "registry.db"),
        online_store={
            "type": "redis",
            "connection_string": parse_redis_url(REDIS_URL).feast_connection_string(),
            "key_ttl_seconds": key_ttl_seconds,
        },
        entity_key_serialization_version=3,
    )


def _rows(n: int, seed: int = 7) -> pd.DataFrame:
    """Random rows with every awkward value: nulls, int64 extremes, unicode, nanosecond timestamps."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 2**63 - 1, size=n, dtype=np.int64)
    ids[:3] = [1, 2**63 - 1, 2**31]
    score = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, size=n)
    score[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324]
    score[rng.random(n) < 0.1] = np.nan
    total = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64, endpoint=True)
    total[:5] = [-(2**63), 2**63 - 1, 0, -1, 127]
    visits: list[int | None] = [None if rng.random() < 0.2 else int(v) for v in rng.integers(0, 10**6, n)]
    alphabet = ["a", "é", "日本", "🙂", " ", "\x00", "z" * 50]
    label: list[str | None] = [
        None if rng.random() < 0.1 else "".join(rng.choice(alphabet, size=rng.integers(0, 12)).tolist())
        for _ in range(n)
    ]
    label[:4] = ["", "x" * 127, "y" * 128, "ü" * 9000]
    flag: list[bool | None] = [None if rng.random() < 0.2 else bool(rng.random() < 0.5) for _ in range(n)]
    base = np.datetime64("2026-05-01T12:00:00", "ns")
    stamps = base + rng.integers(0, 10**15, size=n).astype("timedelta64[ns]")
    stamps[:2] = [base, base + np.timedelta64(999, "ns")]
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


def _columns(df: pd.DataFrame) -> list[FeatureColumn]:
    return [
        FeatureColumn("score", "float64", df["score"].to_numpy()),
        FeatureColumn("visits", "int64", [None if pd.isna(v) else int(v) for v in df["visits"]]),
        FeatureColumn("total", "int64", df["total"].to_numpy()),
        FeatureColumn("label", "string", df["label"].tolist()),
        FeatureColumn("flag", "bool", [None if pd.isna(v) else bool(v) for v in df["flag"]]),
    ]


def _ids(df: pd.DataFrame) -> npt.NDArray[np.int64]:
    return df[JOIN_KEY].to_numpy(dtype=np.int64)


def _stamps(df: pd.DataFrame) -> npt.NDArray[np.datetime64]:
    return df["event_timestamp"].to_numpy(dtype="datetime64[ns]")


def _hgetall(client: redis.Redis, key: bytes) -> dict[bytes, bytes]:
    """HGETALL of a binary key (redis-py annotates hash names as str, though it sends bytes as they are)."""
    return cast("dict[bytes, bytes]", client.hgetall(key))  # type: ignore[arg-type]


def _ttl(client: redis.Redis, key: bytes) -> int:
    return cast(int, client.ttl(key))


def _feast_write(config: RepoConfig, view: FeatureView, df: pd.DataFrame) -> None:
    """What `FeatureStore.write_to_online_store` does, minus the registry lookup."""
    rows = PassthroughProvider._prep_rows_to_write_for_ingestion(view, df)
    RedisOnlineStore().online_write_batch(config, view, rows, None)


def _entity_key(entity_id: int) -> Any:
    return EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(int64_val=entity_id)])


def _write(client: redis.Redis, project: str, df: pd.DataFrame, **kwargs: Any) -> int:
    return write_feature_rows(
        client,
        project=project,
        view=VIEW,
        join_key=JOIN_KEY,
        entity_ids=_ids(df),
        columns=_columns(df),
        event_timestamps=_stamps(df),
        **kwargs,
    )


@pytest.mark.filterwarnings("ignore:Discarding nonzero nanoseconds")
def test_bytes_equal_feasts_writer(client: redis.Redis, new_project: ProjectFactory, tmp_path: Path) -> None:
    """Per entity, our hash (fields and bytes, `_ts:` and nulls included) equals Feast's; keys are `_redis_key`."""
    df = _rows(3_000)
    feast_project, our_project = new_project(), new_project()
    _feast_write(_config(feast_project, tmp_path), _view(), df)
    assert _write(client, our_project, df, batch_rows=700) == len(df)

    ours = encode_entity_keys(join_key=JOIN_KEY, entity_ids=_ids(df), project=our_project)
    theirs = [_redis_key(feast_project, _entity_key(entity_id)) for entity_id in _ids(df).tolist()]
    for entity_id, our_key in zip(_ids(df).tolist(), ours, strict=True):
        assert our_key == _redis_key(our_project, _entity_key(entity_id), entity_key_serialization_version=3)
    pipe = client.pipeline(transaction=False)
    for key in theirs + ours:
        pipe.hgetall(key)  # type: ignore[arg-type]  # redis-py annotates str; bytes keys work
    replies = pipe.execute()
    for index, (their_hash, our_hash) in enumerate(zip(replies[: len(df)], replies[len(df) :], strict=True)):
        assert len(their_hash) == 6
        assert our_hash == their_hash, f"row {index}"
    assert b"" in {value for reply in replies for value in reply.values()}  # nulls were really compared
    assert _ttl(client, ours[0]) == -1


def test_key_ttl_is_set_like_feast(client: redis.Redis, new_project: ProjectFactory, tmp_path: Path) -> None:
    """With `key_ttl_s`, every written key gets the same EXPIRE Feast's `key_ttl_seconds` gives."""
    df = _rows(50).assign(event_timestamp=np.datetime64("2026-05-01T00:00:00", "ns"))
    feast_project, our_project = new_project(), new_project()
    _feast_write(_config(feast_project, tmp_path, key_ttl_seconds=3_600), _view(), df)
    _write(client, our_project, df, key_ttl_s=3_600, batch_rows=16)
    keys = encode_entity_keys(join_key=JOIN_KEY, entity_ids=_ids(df), project=our_project)
    for entity_id, key in zip(_ids(df).tolist(), keys, strict=True):
        feast_key = _redis_key(feast_project, _entity_key(entity_id))
        assert 3_590 <= _ttl(client, key) <= 3_600
        assert 3_590 <= _ttl(client, feast_key) <= 3_600
        assert _hgetall(client, key) == _hgetall(client, feast_key)


def test_feast_reads_what_we_wrote(client: redis.Redis, new_project: ProjectFactory, tmp_path: Path) -> None:
    """`RedisOnlineStore.online_read` returns our values (nulls as empty Values) and microsecond timestamps."""
    df = _rows(200, seed=11)
    project = new_project()
    _write(client, project, df, batch_rows=64)
    results = RedisOnlineStore().online_read(
        _config(project, tmp_path), _view(), [_entity_key(i) for i in _ids(df).tolist()]
    )
    visits = [None if pd.isna(v) else int(v) for v in df["visits"]]
    flags = [None if pd.isna(v) else bool(v) for v in df["flag"]]
    expected = zip(
        _stamps(df), df["score"].tolist(), df["total"].tolist(), visits, df["label"], flags, strict=True
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


def test_other_views_fields_survive_and_we_always_overwrite(
    client: redis.Redis, new_project: ProjectFactory, tmp_path: Path
) -> None:
    """Writing view X leaves view Y's fields in the same hash alone; X is overwritten even by an older row."""
    project = new_project()
    df = _rows(20, seed=3).assign(event_timestamp=np.datetime64("2026-05-02T00:00:00", "ns"))
    other = _view("owtest_other", {"x": Float64})
    _feast_write(_config(project, tmp_path), other, df[[JOIN_KEY, "event_timestamp"]].assign(x=1.5))
    keys = encode_entity_keys(join_key=JOIN_KEY, entity_ids=_ids(df), project=project)
    before = [_hgetall(client, key) for key in keys]

    _write(client, project, df)
    older = _rows(20, seed=4).assign(**{JOIN_KEY: df[JOIN_KEY], "event_timestamp": df["event_timestamp"]})
    older["event_timestamp"] = np.datetime64("2026-04-01T00:00:00", "ns")
    _write(client, project, older)

    expected_project = new_project()
    _write(client, expected_project, older)
    expected = encode_entity_keys(join_key=JOIN_KEY, entity_ids=_ids(df), project=expected_project)
    for key, expected_key, other_fields in zip(keys, expected, before, strict=True):
        now = _hgetall(client, key)
        assert {k: now[k] for k in other_fields} == other_fields
        assert {k: v for k, v in now.items() if k not in other_fields} == _hgetall(client, expected_key)


def test_progress_batches_and_empty_input(client: redis.Redis, new_project: ProjectFactory) -> None:
    """`progress` gets each acknowledged batch's row count; the return is the row count; no rows is a no-op."""
    df = _rows(7)
    seen: list[int] = []
    assert _write(client, new_project(), df, batch_rows=3, progress=seen.append) == 7
    assert seen == [3, 3, 1]
    assert _write(client, new_project(), df.iloc[:0]) == 0


def test_redis_error_raises_and_connection_stays_usable(
    client: redis.Redis, new_project: ProjectFactory
) -> None:
    """A command Redis rejects (WRONGTYPE) raises ResponseError after the batch; the client still works."""
    project = new_project()
    df = _rows(10)
    bad_key = encode_entity_keys(join_key=JOIN_KEY, entity_ids=_ids(df)[4:5], project=project)[0]
    client.set(bad_key, b"not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        _write(client, project, df, batch_rows=4)
    assert client.ping()
    good = encode_entity_keys(join_key=JOIN_KEY, entity_ids=_ids(df)[:4], project=project)
    assert all(client.exists(key) for key in good)


def test_inputs_are_validated(client: redis.Redis) -> None:
    """Column or timestamp lengths that do not match the ids, and duplicate columns, raise ValueError."""
    ids = np.arange(1, 4, dtype=np.int64)
    now = datetime.now(tz=UTC)
    score = FeatureColumn("score", "float64", np.zeros(3))
    cases: list[tuple[list[FeatureColumn], npt.NDArray[np.datetime64] | datetime]] = [
        ([FeatureColumn("score", "float64", np.zeros(2))], now),
        ([score, score], now),
        ([score], np.array(["2026-01-01"], dtype="datetime64[ns]")),
    ]
    for columns, stamps in cases:
        with pytest.raises(ValueError, match=r"."):
            write_feature_rows(
                client,
                project="never-written",
                view=VIEW,
                join_key=JOIN_KEY,
                entity_ids=ids,
                columns=columns,
                event_timestamps=stamps,
            )
