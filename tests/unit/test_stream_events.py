"""The stream's event contract and micro-batch sorting, without I/O: what producers may send, which events
become dead letters and why, and the key that recognises an event sent twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ViewSpec
from core.push.service import PushPolicy
from streaming.batch import prepare_batch
from streaming.events import Event, event_digest, event_key, nats_event, redis_event, reread

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
VIEW = ViewSpec(
    name="stats",
    table="public.stats",
    key=EntityKey.single("customer_id"),
    timestamp_field="event_timestamp",
    created_field=None,
    ttl_s=86_400,
    features=(FeatureSpec("amount", "float64"), FeatureSpec("count", "int64")),
    push_source="stats_push",
)


def _row(entity: int = 1, amount: Any = 1.5, when: datetime = NOW) -> dict[str, Any]:
    return {"customer_id": entity, "event_timestamp": when.isoformat(), "amount": amount, "count": 2}


def _redis(source: str, row: dict[str, Any], message_id: str = "1-0") -> Event:
    return redis_event(message_id, {b"event": json.dumps({"push_source": source, "row": row}).encode()})


def test_a_redis_entry_carries_the_push_source_and_the_row() -> None:
    """`event` = {"push_source", "row"}: both read (the row's JSON kept for its group's decoding, decoded by
    `reread`), the bytes kept for a dead letter."""
    event = _redis("stats_push", _row())
    assert (event.push_source, event.row_json, event.error) == (
        "stats_push",
        json.dumps(_row()).encode(),
        None,
    )
    assert event.readable
    assert (reread(event).push_source, reread(event).row) == ("stats_push", _row())
    assert event.raw.startswith(b'{"push_source"')


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (None, "no fields"),
        ({b"other": b"x"}, "expected one field `event`"),
        ({b"event": b"{", b"extra": b"1"}, "expected one field `event`"),
        ({b"event": b"{not json"}, "bad JSON"),
        ({b"event": b"[1, 2]"}, "expected a JSON object"),
        ({b"event": b'{"push_source": "s", "row": {}, "id": 1}'}, "unknown field(s) id"),
        ({b"event": b'{"push_source": 3, "row": {}}'}, "push_source: expected a non-empty string"),
        ({b"event": b'{"push_source": "s", "row": [1]}'}, "row: expected a JSON object"),
    ],
)
def test_unreadable_redis_entries_say_why(fields: dict[bytes, bytes] | None, error: str) -> None:
    """Every way an entry can miss the contract gives an error naming it."""
    event = redis_event("7-0", fields)
    assert event.error is not None
    assert error in event.error


def test_a_nats_message_takes_its_push_source_from_the_subject() -> None:
    """Subject `tandem.events.<source>`, payload the row; another subject or a non-object is an error."""
    event = nats_event("5", "tandem.events.stats_push", b" " + json.dumps(_row()).encode())
    assert (event.push_source, reread(event).row, event.message_id) == ("stats_push", _row(), "5")
    assert event.row_json == json.dumps(_row()).encode()
    assert "not tandem.events." in (nats_event("6", "tandem.events.a.b", b"{}").error or "")
    assert "bad JSON" in (nats_event("7", "tandem.events.s", b"nope").error or "")
    assert nats_event("8", "x.events.s", b"{}", prefix="x.events.").push_source == "s"


def test_the_event_key_is_its_source_and_content_whatever_the_spelling() -> None:
    """Same source and row (keys in any order): same key, across brokers; another value or source: another."""
    row = _row()
    assert event_key("stats_push", row) == event_key("stats_push", dict(reversed(list(row.items()))))
    redis_key = event_key("stats_push", reread(_redis("stats_push", row)).row or {})
    nats_key = event_key(
        "stats_push", reread(nats_event("1", "tandem.events.stats_push", json.dumps(row).encode())).row or {}
    )
    assert redis_key == nats_key
    assert event_key("stats_push", _row(amount=1.6)) != redis_key
    assert event_key("other_push", row) != redis_key


def test_a_batch_groups_good_events_and_dead_letters_the_rest() -> None:
    """Unreadable, unknown source, wrong type and out-of-window events leave; the good ones stay, in order,
    validated together with their keys."""
    events = [
        _redis("stats_push", _row(1), "1-0"),
        redis_event("2-0", {b"event": b"{"}),
        _redis("nope", _row(2), "3-0"),
        _redis("stats_push", _row(3, amount="x"), "4-0"),
        _redis("stats_push", _row(4, when=NOW + timedelta(days=1)), "5-0"),
        _redis("stats_push", _row(5), "6-0"),
    ]
    batch = prepare_batch(events, {"stats_push": VIEW}, now=NOW, policy=PushPolicy())
    [group] = batch.groups
    assert [e.message_id for e in group.events] == ["1-0", "6-0"]
    assert group.valid.entity_ids == [1, 5]
    assert group.keys == [event_digest("stats_push", _row(1)), event_digest("stats_push", _row(5))]
    assert group.keys[0] == event_key("stats_push", _row(1)).bytes
    dead = {letter.event.message_id: (letter.kind, letter.reason) for letter in batch.dead}
    assert dead["2-0"][0] == "bad_event"
    assert dead["3-0"] == ("unknown_source", "push source 'nope' does not exist")
    assert dead["4-0"] == ("invalid_row", "row.amount: expected a number")
    assert dead["5-0"][0] == "invalid_row"
    assert "outside the accepted window" in dead["5-0"][1]


def test_a_view_lookup_can_be_a_function() -> None:
    """`views` may be a callable (the registry's push views), None meaning unknown."""
    batch = prepare_batch(
        [_redis("stats_push", _row())],
        lambda name: VIEW if name == "stats_push" else None,
        now=NOW,
        policy=PushPolicy(),
    )
    assert len(batch.groups) == 1
    assert batch.dead == []


def test_an_event_the_fast_read_lets_through_is_still_dead_for_the_same_reason() -> None:
    """A number out of range or bad UTF-8 in a row passes the first read (structure only); its group is
    then read the thorough way: the event is a `bad_event` with the reason it always had, the other events
    of its source are written, and dead letters keep their order (unreadable first, in arrival order)."""
    bad_number = b'{"push_source": "stats_push", "row": {"customer_id": 9, "amount": 1e400}}'
    bad_text = b'{"push_source": "stats_push", "row": {"customer_id": "\xff"}}'
    events = [
        _redis("stats_push", _row(1), "1-0"),
        _redis("stats_push", _row(2, amount="x"), "2-0"),
        redis_event("3-0", {b"event": bad_number}),
        redis_event("4-0", {b"event": bad_text}),
        _redis("stats_push", _row(5), "5-0"),
    ]
    assert events[2].readable
    batch = prepare_batch(events, {"stats_push": VIEW}, now=NOW, policy=PushPolicy())
    [group] = batch.groups
    assert [e.message_id for e in group.events] == ["1-0", "5-0"]
    assert group.keys == [event_digest("stats_push", _row(1)), event_digest("stats_push", _row(5))]
    assert [(d.event.message_id, d.kind) for d in batch.dead] == [
        ("3-0", "bad_event"),
        ("4-0", "bad_event"),
        ("2-0", "invalid_row"),
    ]
    assert batch.dead[0].reason.startswith("bad JSON: Number out of range")
    assert batch.dead[1].reason.startswith("bad JSON: Invalid UTF-8")


def test_the_fast_and_the_thorough_read_give_the_same_group() -> None:
    """The same events read both ways (the second made thorough by `reread`) give equal groups and keys."""
    events = [_redis("stats_push", _row(i, amount=i if i % 2 else 0.5 * i), f"{i}-0") for i in range(1, 9)]
    fast = prepare_batch(events, {"stats_push": VIEW}, now=NOW, policy=PushPolicy())
    thorough = prepare_batch([reread(e) for e in events], {"stats_push": VIEW}, now=NOW, policy=PushPolicy())
    [a], [b] = fast.groups, thorough.groups
    assert a.valid == b.valid
    assert a.keys == b.keys
    assert [type(v) for v in a.valid.values["amount"]] == [float] * 8
