"""The push use case on in-memory fakes: offline commit first, outbox row in the same commit, online write
after with a bounded retry, `pending` and the outbox when Redis fails, drained by the next push; the event
time window; the outbox payload round trip; encoders that refuse years outside 1-9999."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from core.errors import StoreUnavailableError
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.offline.append import OfflineRows
from core.online.encoding import encode_timestamps
from core.online.rows import FeatureColumn, FeatureRows
from core.push.outbox import OutboxItem, outbox_payload, rows_from_payload
from core.push.rows import PushError, validate_rows
from core.push.service import PushPolicy, PushService
from core.settings import Settings

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
VIEW = ViewSpec(
    name="stats",
    table="public.stats",
    key=EntityKey.single("item_id"),
    timestamp_field="ts",
    created_field=None,
    ttl_s=86_400,
    features=(FeatureSpec("count", "int64"), FeatureSpec("rate", "float64"), FeatureSpec("tag", "string")),
    push_source="stats_push",
)
SERVICE = ServiceSpec(name="svc", views=(VIEW,), refs=())


def _row(item: int, when: datetime = NOW, **overrides: object) -> dict[str, object]:
    return {"item_id": item, "ts": when.isoformat(), "count": 1, "rate": 0.5, "tag": "a", **overrides}


@dataclass
class FakePushStore:
    """PostgreSQL's side: committed offline rows and the outbox (id -> [rows, leased, last error])."""

    down: bool = False
    offline: list[OfflineRows] = field(default_factory=list)
    outbox: dict[int, list[Any]] = field(default_factory=dict)
    next_id: int = 1

    async def append(self, rows: OfflineRows, online: FeatureRows) -> int:
        if self.down:
            raise StoreUnavailableError("PostgreSQL (offline append): connection refused")
        self.offline.append(rows)
        self.outbox[self.next_id] = [online, True, None]
        self.next_id += 1
        return self.next_id - 1

    async def settle(self, done: Sequence[int], *, claim: int = 0) -> list[OutboxItem]:
        for row_id in done:
            del self.outbox[row_id]
        free = [row_id for row_id, (_, leased, _) in sorted(self.outbox.items()) if not leased][:claim]
        for row_id in free:
            self.outbox[row_id][1] = True
        return [OutboxItem(row_id, self.outbox[row_id][0]) for row_id in free]

    async def release(self, ids: Sequence[int], *, error: str) -> None:
        for row_id in ids:
            self.outbox[row_id][1:] = [False, error]


@dataclass
class FakeOnline:
    """Redis: fails `failures` times, then writes (newest event time per entity wins)."""

    failures: int = 0
    calls: int = 0
    online: dict[int, np.datetime64] = field(default_factory=dict)

    async def write_newer(self, rows: FeatureRows) -> int:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailableError("Redis (online store): connection refused")
        written = 0
        assert isinstance(rows.event_timestamps, np.ndarray)
        for entity, stamp in zip(rows.entity_ids.tolist(), rows.event_timestamps, strict=True):
            if entity not in self.online or stamp > self.online[entity]:
                self.online[entity] = stamp
                written += 1
        return written


def _service(store: FakePushStore, online: FakeOnline) -> PushService:
    policy = PushPolicy(online_attempts=2, online_retry_s=0.0)
    return PushService(service=SERVICE, offline=store, online=online, clock=lambda: NOW, policy=policy)


def test_written_online_clears_the_outbox_row() -> None:
    """Offline committed with its outbox row, online written, the outbox row deleted: `written`."""
    store, online = FakePushStore(), FakeOnline()
    result = asyncio.run(_service(store, online).push("stats_push", [_row(1), _row(2)]))
    assert (result.rows, result.written_online, result.online) == (2, 2, "written")
    assert len(store.offline[0]) == 2
    assert store.outbox == {}
    assert sorted(online.online) == [1, 2]


def test_one_failure_is_retried() -> None:
    """A single online failure is retried once within the push: written, nothing left in the outbox."""
    store, online = FakePushStore(), FakeOnline(failures=1)
    result = asyncio.run(_service(store, online).push("stats_push", [_row(1)]))
    assert (result.written_online, result.online, online.calls) == (1, "written", 2)
    assert store.outbox == {}


def test_redis_down_keeps_offline_and_outbox_then_next_push_drains() -> None:
    """Redis down through every try: 200-worthy `pending`, offline kept, the outbox row released with the
    error; the next push (Redis back) writes its rows and the earlier ones, and empties the outbox."""
    store, online = FakePushStore(), FakeOnline(failures=2)
    service = _service(store, online)
    first = asyncio.run(service.push("stats_push", [_row(1), _row(1, NOW - timedelta(minutes=1))]))
    assert (first.written_online, first.online) == (0, "pending")
    assert len(store.offline) == 1
    [(rows, leased, error)] = store.outbox.values()
    assert rows.entity_ids.tolist() == [1]  # the entity's newest row only
    assert not leased
    assert "Redis" in error
    assert online.online == {}

    second = asyncio.run(service.push("stats_push", [_row(2)]))
    assert (second.written_online, second.online) == (1, "written")
    assert store.outbox == {}
    assert sorted(online.online) == [1, 2]
    assert online.online[1] == np.datetime64(NOW.replace(tzinfo=None), "us")


def test_postgres_down_writes_nothing() -> None:
    """PostgreSQL unreachable: StoreUnavailableError (503) before any online write."""
    store, online = FakePushStore(down=True), FakeOnline()
    with pytest.raises(StoreUnavailableError, match="PostgreSQL"):
        asyncio.run(_service(store, online).push("stats_push", [_row(1)]))
    assert online.calls == 0


@pytest.mark.parametrize(
    ("when", "accepted"),
    [
        (NOW, True),
        (NOW - timedelta(seconds=86_400), True),
        (NOW - timedelta(seconds=86_401), False),
        (NOW + timedelta(seconds=300), True),
        (NOW + timedelta(seconds=301), False),
        (NOW + timedelta(days=365), False),
    ],
)
def test_event_time_window(when: datetime, accepted: bool) -> None:
    """Event times in [now - the view's TTL, now + the clock-skew allowance] pass; others are a PushError
    naming the row and field."""
    rows = [_row(1), _row(2, when)]
    if accepted:
        assert validate_rows(VIEW, rows, now=NOW, clock_skew_s=300).event_ts[1] == when
        return
    with pytest.raises(PushError, match=r"rows\[1\]\.ts: event time .* outside the accepted window"):
        validate_rows(VIEW, rows, now=NOW, clock_skew_s=300)


def test_view_without_ttl_uses_max_age() -> None:
    """A view with TTL 0 takes `max_age_s` as how far back an event may be."""
    view = replace(VIEW, ttl_s=0)
    old = [_row(1, NOW - timedelta(days=10))]
    assert len(validate_rows(view, old, now=NOW, max_age_s=11 * 86_400).entity_ids) == 1
    with pytest.raises(PushError, match=r"rows\[0\]\.ts"):
        validate_rows(view, old, now=NOW, max_age_s=9 * 86_400)


@pytest.mark.parametrize(
    "stamp", ["9999-12-31T23:59:59+00:00", "0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-05:00"]
)
def test_extreme_timestamps_are_push_errors(stamp: str) -> None:
    """Years at the edge of Python's range (or past it once converted to UTC) are a PushError, not a crash."""
    with pytest.raises(PushError, match=r"rows\[0\]\.ts"):
        validate_rows(VIEW, [{**_row(1), "ts": stamp}], now=NOW)


def test_nul_in_a_string_is_a_push_error() -> None:
    """PostgreSQL text cannot hold NUL: 400 naming the field, not a 503 from the insert."""
    with pytest.raises(PushError, match=r"rows\[0\]\.tag: NUL"):
        validate_rows(VIEW, [_row(1, tag="a\x00b")], now=NOW)


def test_encoders_refuse_years_a_timestamp_cannot_hold() -> None:
    """Past 9999 (or before year 1) the encoder raises; before, years past 2262 wrapped through nanoseconds."""
    far = np.array(["9999-12-31T23:59:59.999999"], dtype="datetime64[us]")
    assert encode_timestamps(far, 1) == encode_timestamps(
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 1
    )
    with pytest.raises(ValueError, match="years 1-9999"):
        encode_timestamps(np.array(["10000-01-01"], dtype="datetime64[us]"), 1)
    with pytest.raises(ValueError, match="years 1-9999"):
        encode_timestamps(np.array(["-0001-01-01"], dtype="datetime64[us]"), 1)


def test_outbox_payload_round_trip() -> None:
    """The online rows survive JSON: ids (int64 extremes), kinds, nulls (NaN is Feast's null), microsecond
    event times before and after the epoch, key kind and TTL."""
    rows = FeatureRows(
        view="stats",
        key=EntityKey.single("item_id", "int32"),
        entity_ids=np.array([-(2**31), 2**31 - 1, 7], dtype=np.int64),
        columns=(
            FeatureColumn("count", "int64", np.array([2**63 - 1, None, -1], dtype=object)),
            FeatureColumn("rate", "float64", np.array([0.1, float("nan"), 1e300])),
            FeatureColumn("tag", "string", np.array(["é", None, ""], dtype=object)),
            FeatureColumn("flag", "bool", np.array([True, False, None], dtype=object)),
        ),
        event_timestamps=np.array(
            ["1969-12-31T23:59:59.999999", "2026-05-04T12:00:00.000001", "9999-12-31T23:59:59"],
            dtype="datetime64[us]",
        ),
        key_ttl_s=3600,
    )
    back = rows_from_payload(json.loads(json.dumps(outbox_payload(rows), allow_nan=False)))
    assert back.entity_ids.tolist() == rows.entity_ids.tolist()
    assert isinstance(back.event_timestamps, np.ndarray)
    assert back.event_timestamps.tolist() == rows.event_timestamps.tolist()  # type: ignore[union-attr]
    assert [c.values.tolist() for c in back.columns] == [  # type: ignore[union-attr]
        [2**63 - 1, None, -1],
        [0.1, None, 1e300],
        ["é", None, ""],
        [True, False, None],
    ]
    assert [(c.name, c.kind) for c in back.columns] == [(c.name, c.kind) for c in rows.columns]
    assert (back.view, back.key, back.key_ttl_s) == ("stats", EntityKey.single("item_id", "int32"), 3600)
    assert encode_timestamps(back.event_timestamps, 3) == encode_timestamps(rows.event_timestamps, 3)


def test_policy_from_settings() -> None:
    """The push settings become the policy: window, tries, drain period."""
    settings = Settings(
        push_max_age_s=60, push_clock_skew_s=1.5, push_online_attempts=3, push_online_retry_s=0.2,
        push_outbox_interval_s=7,
    )  # fmt: skip
    assert PushPolicy.from_settings(settings) == PushPolicy(
        max_age_s=60, clock_skew_s=1.5, online_attempts=3, online_retry_s=0.2, drain_every_s=7
    )
