"""The online store's pure parts (`core.online.wire`, `core.online.rows`): the read layout (field list,
keys, request bytes, decoding a reply, stored predictions), TTL, the write and delete commands, and
newer-wins. No I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import redis

from core.errors import ConfigurationError, NotFoundError
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.online.async_store import AsyncOnlineStore
from core.online.encoding import encode_timestamps, encode_values, feature_field, timestamp_field
from core.online.keys import encode_entity_keys
from core.online.rows import FeatureColumn, FeatureRows, OnlineRow, StoredPrediction, apply_ttl
from core.online.store import OnlineStore
from core.online.wire import ReadLayout, command, pack_hdels, pack_hsets
from tests.newer_wins_reference import newer_positions, pack_hgets

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _view(name: str, ttl_s: int, *features: tuple[str, str], join_key: str = "customer_id") -> ViewSpec:
    return ViewSpec(
        name=name,
        table=f"features.{name}",
        key=EntityKey.single(join_key),
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


def _reader() -> ReadLayout:
    return ReadLayout(project="proj", service=SERVICE, predictions=PREDICTIONS)


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
        ReadLayout(project="p", service=SERVICE, predictions=other_key)
    lacking = _view("batch_predictions", 0, ("score", "float64"), ("model_version", "string"))
    with pytest.raises(NotFoundError, match="run_id"):
        ReadLayout(project="p", service=SERVICE, predictions=lacking)


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


def _packed(*commands: Sequence[object]) -> bytes:
    """redis-py's own packing of `commands` (no I/O: a connection that is never opened)."""
    connection = redis.Connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
    return b"".join(connection.pack_commands(commands))  # type: ignore[no-untyped-call]  # untyped


class _NoTransport:
    """An async transport that fails the test if anything is sent."""

    async def request(self, payload: bytes, replies: int) -> list[Any]:
        raise AssertionError(f"unexpected request of {replies} replies")


def test_clients_decoding_responses_are_refused() -> None:
    """A client with decode_responses=True would hand back str: refused when the store is built."""
    with pytest.raises(ConfigurationError, match="decode_responses"):
        OnlineStore(redis.Redis(decode_responses=True), project="proj")


def test_no_entities_no_read() -> None:
    """Zero ids: an empty list and no request (the sync client points nowhere, the async transport fails)."""
    assert OnlineStore(redis.Redis(port=1), project="proj").read(_reader(), []) == []
    assert asyncio.run(AsyncOnlineStore(_NoTransport(), project="proj").read(_reader(), [])) == []
    empty = _rows([], [])
    assert asyncio.run(AsyncOnlineStore(_NoTransport(), project="proj").write_newer(empty)) == 0


SCORE = FeatureColumn("score", "float64", np.array([0.5, np.nan, -1.0]))
LABEL = FeatureColumn("label", "string", ["a", None, "日本"])


def _rows(
    ids: Sequence[int],
    stamps: Sequence[datetime] | datetime,
    *,
    columns: tuple[FeatureColumn, ...] | None = None,
    key_ttl_s: int | None = None,
) -> FeatureRows:
    """Rows of view `v` with a zero score each (unless `columns`), event times given per row or for all."""
    event_timestamps: npt.NDArray[np.datetime64] | datetime = (
        stamps
        if isinstance(stamps, datetime)
        else np.array([s.astimezone(UTC).replace(tzinfo=None) for s in stamps], dtype="datetime64[us]")
    )
    return FeatureRows(
        view="v",
        key=EntityKey.single("customer_id"),
        entity_ids=np.array(ids, dtype=np.int64),
        columns=columns or (FeatureColumn("score", "float64", np.zeros(len(ids))),),
        event_timestamps=event_timestamps,
        key_ttl_s=key_ttl_s,
    )


def test_pack_hsets_is_feasts_hset_then_expire() -> None:
    """Per row `HSET <key> _ts:v <Timestamp> <mmh3 field> <Value>...` (Feast's field order), as redis-py
    packs it; with a key TTL an `EXPIRE <key> <ttl>` after each HSET; the command count says how many."""
    stamps = [NOW, NOW - timedelta(microseconds=1), NOW + timedelta(days=400)]
    rows = _rows([7, -(2**63), 2**63 - 1], stamps, columns=(SCORE, LABEL))
    keys = encode_entity_keys(join_key="customer_id", entity_ids=rows.entity_ids, project="proj")
    hsets = [
        (
            "HSET",
            key,
            b"_ts:v",
            encode_timestamps(stamp, 1)[0],
            feature_field("v", "score"),
            encode_values("float64", [score])[0],
            feature_field("v", "label"),
            encode_values("string", [label])[0],
        )
        for key, stamp, score, label in zip(keys, stamps, SCORE.values, LABEL.values, strict=True)
    ]
    assert pack_hsets("proj", rows) == (_packed(*hsets), 3)
    with_ttl = _rows([7, -(2**63), 2**63 - 1], stamps, columns=(SCORE, LABEL), key_ttl_s=3_600)
    expected = [part for hset in hsets for part in (hset, ("EXPIRE", hset[1], 3_600))]
    assert pack_hsets("proj", with_ttl) == (_packed(*expected), 6)
    assert pack_hsets("proj", rows.take([])) == (b"", 0)


def test_pack_hsets_one_timestamp_for_all_rows() -> None:
    """One event time for every row writes the same `_ts` bytes as that time given per row."""
    assert pack_hsets("proj", _rows([1, 2], NOW)) == pack_hsets("proj", _rows([1, 2], [NOW, NOW]))


def test_pack_hgets_hdels_and_command() -> None:
    """HGET of each row's `_ts`, HDEL of the given fields per entity, any command: as redis-py packs them."""
    rows = _rows([3, 4], NOW)
    keys = encode_entity_keys(join_key="customer_id", entity_ids=rows.entity_ids, project="proj")
    assert pack_hgets("proj", rows) == _packed(*(("HGET", key, b"_ts:v") for key in keys))
    fields = [feature_field("v", "score"), timestamp_field("v")]
    assert pack_hdels("proj", EntityKey.single("customer_id"), rows.entity_ids, fields) == _packed(
        *(("HDEL", key, *fields) for key in keys)
    )
    assert command(b"SCAN", b"0", b"MATCH", b"*proj") == _packed(("SCAN", "0", "MATCH", "*proj"))


def _stored(moment: datetime | None) -> bytes | None:
    return None if moment is None else encode_timestamps(moment, 1)[0]


@pytest.mark.parametrize(
    ("stored", "ours", "written"),
    [
        (None, NOW, True),  # nothing stored: write
        (NOW, NOW, False),  # equal: skip
        (NOW, NOW - timedelta(days=1), False),  # older: skip
        (NOW, NOW - timedelta(microseconds=1), False),  # older by a microsecond: skip
        (NOW, NOW + timedelta(microseconds=1), True),  # newer by a microsecond: write
        (NOW, NOW + timedelta(days=1), True),  # newer: write
        (NOW, NOW.replace(tzinfo=None), False),  # naive is UTC: equal
        (NOW, (NOW + timedelta(microseconds=1)).replace(tzinfo=None), True),  # naive, newer
        (NOW, NOW.astimezone(timezone(timedelta(hours=-5))), False),  # another zone, same instant
    ],
)
def test_newer_positions_is_feasts_rule(stored: datetime | None, ours: datetime, written: bool) -> None:
    """A row replaces the online one only with a strictly newer event time (compared in microseconds);
    nothing stored always writes; naive times are UTC. Same answer for one time for all rows or per row."""
    expected = [0] if written else []
    assert newer_positions(_rows([1], ours), [_stored(stored)]) == expected
    per_row = FeatureRows(
        view="v",
        key=EntityKey.single("customer_id"),
        entity_ids=np.array([1], dtype=np.int64),
        columns=(FeatureColumn("score", "float64", np.zeros(1)),),
        event_timestamps=np.array([ours.astimezone(UTC).replace(tzinfo=None)], dtype="datetime64[ns]")
        if ours.tzinfo
        else np.array([ours], dtype="datetime64[ns]"),
    )
    assert newer_positions(per_row, [_stored(stored)]) == expected


def test_newer_positions_ignores_nanoseconds() -> None:
    """Feast keeps microseconds: 999 ns past the stored time is the same instant, and skipped."""
    rows = FeatureRows(
        view="v",
        key=EntityKey.single("customer_id"),
        entity_ids=np.array([1, 2], dtype=np.int64),
        columns=(FeatureColumn("score", "float64", np.zeros(2)),),
        event_timestamps=np.array(
            ["2026-05-01T12:00:00.000000999", "2026-05-01T12:00:00.000001"], "datetime64[ns]"
        ),
    )
    assert newer_positions(rows, [_stored(NOW), _stored(NOW)]) == [1]


def test_newer_positions_within_one_batch() -> None:
    """Rows of one entity in one batch (written in order) follow Feast's rule too: a row that is not newer
    than the entity's row kept earlier in the batch is skipped, so the newest one ends up online."""
    day = timedelta(days=1)
    rows = _rows([1, 1, 2, 2, 3, 3], [NOW + 2 * day, NOW + day, NOW, NOW + day, NOW - day, NOW + day])
    stored = [_stored(NOW), _stored(NOW), None, None, _stored(NOW), _stored(NOW)]
    assert newer_positions(rows, stored) == [0, 2, 3, 5]


def test_newer_positions_checks_lengths() -> None:
    """One stored timestamp per row, or ValueError."""
    with pytest.raises(ValueError, match="stored timestamps"):
        newer_positions(_rows([1, 2], NOW), [None])


def test_feature_rows_are_validated() -> None:
    """Column or timestamp lengths that do not match the ids, duplicate or no columns, 2-D ids: ValueError."""
    ids = np.arange(1, 4, dtype=np.int64)
    score = FeatureColumn("score", "float64", np.zeros(3))
    cases: list[
        tuple[npt.NDArray[np.int64], tuple[FeatureColumn, ...], npt.NDArray[np.datetime64] | datetime]
    ] = [
        (ids, (FeatureColumn("score", "float64", np.zeros(2)),), NOW),
        (ids, (score, score), NOW),
        (ids, (), NOW),
        (ids, (score,), np.array(["2026-01-01"], dtype="datetime64[ns]")),
        (ids.reshape(3, 1), (score,), NOW),
    ]
    for entity_ids, columns, stamps in cases:
        with pytest.raises(ValueError, match=r"."):
            FeatureRows(
                view="v",
                key=EntityKey.single("customer_id"),
                entity_ids=entity_ids,
                columns=columns,
                event_timestamps=stamps,
            )


def test_take_and_part_keep_rows_aligned() -> None:
    """`take` (positions) and `part` (a range) pick the same rows from ids, every column and the times."""
    stamps = [NOW, NOW + timedelta(seconds=1), NOW + timedelta(seconds=2)]
    rows = _rows([10, 20, 30], stamps, columns=(SCORE, LABEL))
    picked = rows.take([2, 0])
    assert picked.entity_ids.tolist() == [30, 10]
    assert list(picked.columns[1].values) == ["日本", "a"]
    assert (
        pack_hsets("p", picked)[0]
        == pack_hsets("p", rows.part(2, 3))[0] + pack_hsets("p", rows.part(0, 1))[0]
    )
    assert len(rows.part(1, 3)) == 2
