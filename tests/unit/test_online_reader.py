"""The online reader's pure parts: field list, keys, decoding a reply, stored predictions, TTL (no I/O)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
import redis
import redis.asyncio

from core.errors import ConfigurationError, NotFoundError
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.online.encoding import (
    encode_entity_keys,
    encode_timestamps,
    encode_values,
    feature_field,
    timestamp_field,
)
from core.online.reader import OnlineReader, OnlineRow, StoredPrediction, apply_ttl

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _view(name: str, ttl_s: int, *features: tuple[str, str], join_key: str = "customer_id") -> ViewSpec:
    return ViewSpec(
        name=name,
        table=f"features.{name}",
        join_key=join_key,
        timestamp_field="event_timestamp",
        created_field=None,
        ttl_s=ttl_s,
        features=tuple(FeatureSpec(n, k) for n, k in features),  # type: ignore[arg-type]  # kinds are literals
    )


PROFILE = _view("profile", 3 * 86_400, ("age", "int64"), ("limit", "float64"))
TXN = _view("txn", 2 * 86_400, ("count", "int64"), ("country", "string"), ("foreign", "bool"))
FOREVER = _view("forever", 0, ("tier", "string"))
SERVICE = ServiceSpec(
    name="svc",
    views=(PROFILE, TXN, FOREVER),
    refs=("profile:age", "profile:limit", "txn:count", "txn:country", "txn:foreign", "forever:tier"),
)
PREDICTIONS = _view(
    "batch_predictions",
    7 * 86_400,
    ("score", "float64"),
    ("model_version", "string"),
    ("run_id", "string"),
    ("feature_snapshot_ts", "string"),
)
SNAPSHOT = '{"profile":"2026-04-30T00:00:00+00:00","txn":"2026-05-01T02:00:00+02:00","forever":null}'


def _reader() -> OnlineReader:
    return OnlineReader(project="proj", service=SERVICE, predictions=PREDICTIONS)


def _ts(moment: datetime) -> bytes:
    return encode_timestamps(moment, 1)[0]


def _one(kind: str, value: object) -> bytes:
    return encode_values(kind, [value])[0]  # type: ignore[arg-type]  # kind is one of the literals


def _raw(**overrides: bytes | None) -> list[bytes | None]:
    """A full HMGET reply in `fields()` order; keyword overrides by field label (`view:feature`, `_ts:view`)."""
    cells: dict[str, bytes | None] = {
        "profile:age": _one("int64", 400),
        "profile:limit": _one("float64", 2500.5),
        "txn:count": _one("int64", -3),
        "txn:country": _one("string", "日本"),
        "txn:foreign": _one("bool", False),
        "forever:tier": _one("string", None),
        "_ts:profile": _ts(NOW - timedelta(days=1)),
        "_ts:txn": _ts(NOW - timedelta(hours=1, microseconds=7)),
        "_ts:forever": _ts(datetime(2001, 1, 1, tzinfo=UTC)),
        "batch_predictions:score": _one("float64", 0.25),
        "batch_predictions:model_version": _one("string", "v3"),
        "batch_predictions:run_id": _one("string", "run-1"),
        "batch_predictions:feature_snapshot_ts": _one("string", SNAPSHOT),
        "_ts:batch_predictions": _ts(NOW - timedelta(hours=6)),
    }
    cells.update(overrides)
    return list(cells.values())


def test_fields_are_features_then_timestamps_then_stored() -> None:
    """One field list for every entity: service features (mmh3), each view's `_ts`, stored features, `_ts`."""
    expected = [feature_field(*ref.split(":")) for ref in SERVICE.refs]
    expected += [b"_ts:profile", b"_ts:txn", b"_ts:forever"]
    expected += [feature_field("batch_predictions", n) for n in ("score", "model_version", "run_id")]
    expected += [
        feature_field("batch_predictions", "feature_snapshot_ts"),
        timestamp_field("batch_predictions"),
    ]
    assert _reader().fields() == expected
    assert len(_raw()) == len(expected)


def test_keys_are_feasts() -> None:
    """Keys equal the encoder's (= Feast's `_redis_key`) for any int64; anything else raises ValueError."""
    ids = [1, 0, -1, 2**63 - 1, -(2**63), 123_456_789]
    expected = encode_entity_keys(
        join_key="customer_id", entity_ids=np.array(ids, dtype=np.int64), project="proj"
    )
    assert [_reader().key(i) for i in ids] == expected
    with pytest.raises(ValueError, match="int64"):
        _reader().key(2**63)


def test_decode_full_row() -> None:
    """Values by `view:feature` (nulls None), event times per view and the parsed stored prediction."""
    row = _reader().decode(42, _raw())
    assert row.entity_id == 42
    assert row.values == {
        "profile:age": 400,
        "profile:limit": 2500.5,
        "txn:count": -3,
        "txn:country": "日本",
        "txn:foreign": False,
        "forever:tier": None,
    }
    assert row.event_ts == {
        "profile": NOW - timedelta(days=1),
        "txn": NOW - timedelta(hours=1, microseconds=7),
        "forever": datetime(2001, 1, 1, tzinfo=UTC),
    }
    assert row.stored == StoredPrediction(
        score=0.25,
        model_version="v3",
        run_id="run-1",
        scored_at=NOW - timedelta(hours=6),
        feature_snapshot_ts={
            "profile": datetime(2026, 4, 30, tzinfo=UTC),
            "txn": datetime(2026, 5, 1, tzinfo=UTC),
            "forever": None,
        },
    )
    assert row.stored is not None
    assert all(t is None or t.tzinfo is UTC for t in row.stored.feature_snapshot_ts.values())


def test_missing_entity_and_missing_view() -> None:
    """An unknown entity (all None) gives None everywhere; a view without `_ts` has event time None."""
    row = _reader().decode(7, [None] * len(_reader().fields()))
    assert set(row.values.values()) == {None}
    assert row.event_ts == {"profile": None, "txn": None, "forever": None}
    assert row.stored is None
    partial = _reader().decode(7, _raw(**{"_ts:txn": None, "txn:count": None, "txn:country": None}))
    assert partial.event_ts["txn"] is None
    assert partial.values["txn:count"] is None
    assert partial.values["txn:foreign"] is False  # what is stored is returned, as Feast does
    assert partial.event_ts["profile"] == NOW - timedelta(days=1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"_ts:batch_predictions": None},
        {"batch_predictions:score": None},
        {"batch_predictions:score": b""},
        {"batch_predictions:model_version": None},
        {"batch_predictions:run_id": b""},
        {"batch_predictions:feature_snapshot_ts": None},
        {"batch_predictions:feature_snapshot_ts": _one("string", "not json")},
        {"batch_predictions:feature_snapshot_ts": _one("string", "[1, 2]")},
        {"batch_predictions:feature_snapshot_ts": _one("string", '{"txn": 5}')},
        {"batch_predictions:feature_snapshot_ts": _one("string", '{"txn": "yesterday"}')},
        {"batch_predictions:score": _one("string", "0.5")},
        {"batch_predictions:score": _one("bool", True)},
        {"batch_predictions:run_id": _one("int64", 5)},
    ],
)
def test_incomplete_stored_prediction_is_none(overrides: dict[str, bytes | None]) -> None:
    """A stored prediction missing any of its five fields, or with a wrong type or snapshot, is None."""
    assert _reader().decode(1, _raw(**overrides)).stored is None


def test_stored_details() -> None:
    """An int score becomes a float; naive snapshot times are UTC; an empty snapshot is an empty dict."""
    snapshot = _one("string", '{"profile":"2026-04-30T10:00:00"}')
    stored = _reader().decode(1, _raw(**{"batch_predictions:feature_snapshot_ts": snapshot})).stored
    assert stored is not None
    assert stored.feature_snapshot_ts == {"profile": datetime(2026, 4, 30, 10, tzinfo=UTC)}
    stored = (
        _reader()
        .decode(
            1,
            _raw(
                **{
                    "batch_predictions:score": _one("int64", 1),
                    "batch_predictions:feature_snapshot_ts": _one("string", "{}"),
                }
            ),
        )
        .stored
    )
    assert stored is not None
    assert stored.score == 1.0
    assert isinstance(stored.score, float)
    assert stored.feature_snapshot_ts == {}


def test_reply_length_is_checked() -> None:
    """A reply with the wrong number of fields raises ValueError."""
    with pytest.raises(ValueError, match="field values"):
        _reader().decode(1, _raw()[:-1])


def test_bad_configuration_is_named() -> None:
    """A predictions view on another join key, or lacking a stored feature, is refused when building."""
    other_key = _view("batch_predictions", 0, ("score", "float64"), join_key="account_id")
    with pytest.raises(ConfigurationError, match="account_id"):
        OnlineReader(project="p", service=SERVICE, predictions=other_key)
    lacking = _view("batch_predictions", 0, ("score", "float64"), ("model_version", "string"))
    with pytest.raises(NotFoundError, match="run_id"):
        OnlineReader(project="p", service=SERVICE, predictions=lacking)


def test_clients_decoding_responses_are_refused() -> None:
    """A client with decode_responses=True would hand back str: refused before any I/O."""
    with pytest.raises(ConfigurationError, match="decode_responses"):
        _reader().read_sync(redis.Redis(decode_responses=True), [1])
    with pytest.raises(ConfigurationError, match="decode_responses"):
        asyncio.run(_reader().read(redis.asyncio.Redis(decode_responses=True), [1]))


def test_no_entities_no_read() -> None:
    """Zero ids: an empty list and no connection (the client points nowhere)."""
    assert _reader().read_sync(redis.Redis(port=1), []) == []
    assert asyncio.run(_reader().read(redis.asyncio.Redis(port=1), [])) == []


def _row() -> OnlineRow:
    return _reader().decode(5, _raw())


def test_ttl_boundary_matches_offline_retrieval() -> None:
    """A view's row counts while `event_ts >= now - ttl` (offline's rule): at the boundary it stays, one
    microsecond later its values are null and its event time None; other views and the stored score stay."""
    row = _row()
    boundary = row.event_ts["txn"]
    assert boundary is not None
    at_boundary = boundary + timedelta(seconds=TXN.ttl_s)
    assert apply_ttl(row, SERVICE, now=at_boundary) is row  # nothing expired: the same row
    later = apply_ttl(row, SERVICE, now=at_boundary + timedelta(microseconds=1))
    assert later.event_ts == {**row.event_ts, "txn": None}
    assert later.values == {**row.values, "txn:count": None, "txn:country": None, "txn:foreign": None}
    assert later.stored == row.stored
    assert row.values["txn:count"] == -3  # the input row is unchanged


def test_ttl_zero_never_expires_and_missing_views_count_as_expired() -> None:
    """ttl_s 0 keeps a view however old; a TTL view without an event time is nulled; aware `now` only."""
    row = _row()
    far = apply_ttl(row, SERVICE, now=datetime(2100, 1, 1, tzinfo=UTC))
    assert far.values["forever:tier"] is None  # null stored, kept as is
    assert far.event_ts["forever"] == datetime(2001, 1, 1, tzinfo=UTC)
    assert far.event_ts["profile"] is None
    assert far.event_ts["txn"] is None
    no_ts = _reader().decode(5, _raw(**{"_ts:profile": None}))
    assert apply_ttl(no_ts, SERVICE, now=NOW).values["profile:age"] is None
    assert apply_ttl(no_ts, SERVICE, now=NOW).values["txn:count"] == -3
    other_zone = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert apply_ttl(row, SERVICE, now=other_zone) == apply_ttl(row, SERVICE, now=NOW)
    with pytest.raises(ValueError, match="aware"):
        apply_ttl(row, SERVICE, now=NOW.replace(tzinfo=None))


def test_request_is_what_redis_py_packs() -> None:
    """The pre-packed request equals redis-py's packing of one `HMGET <key> <fields...>` per id, in order;
    no ids is no bytes; an id outside int64 raises ValueError."""
    reader = _reader()
    ids = [3, -1, 2**63 - 1, 3, 0]
    commands = [("HMGET", reader.key(i), *reader.fields()) for i in ids]
    connection = redis.Connection()  # type: ignore[no-untyped-call]  # untyped in redis-py; no I/O: packing only
    packed = b"".join(connection.pack_commands(commands))  # type: ignore[no-untyped-call]  # untyped
    assert reader.request(ids) == packed
    assert reader.request([]) == b""
    with pytest.raises(ValueError, match="int64"):
        reader.request([1, -(2**63) - 1])
