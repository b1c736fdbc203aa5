"""The fast path of push validation accepts no row the slow one refuses, and gives the very same values and
sorted-key JSON (the event key's input), over many generated good and bad rows (no I/O)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ViewSpec
from core.push.rows import PushError, ValidRows, validate_rows
from core.push.typed import typed_rows

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FEATURES = (
    FeatureSpec("f64", "float64"),
    FeatureSpec("f32", "float32"),
    FeatureSpec("i64", "int64"),
    FeatureSpec("i32", "int32"),
    FeatureSpec("flag", "bool"),
    FeatureSpec("tag", "string"),
)
VIEWS = [
    ViewSpec("v", "public.v", EntityKey.single("id"), "ts", None, 86_400, FEATURES, "p"),
    ViewSpec("v", "public.v", EntityKey.single("id", "int32"), "ts", "created", 0, FEATURES[:3], "p"),
    ViewSpec("v", "public.v", EntityKey.single("id", "string"), "ts", "created", 3600, FEATURES[3:], "p"),
    ViewSpec(
        "v", "public.v", EntityKey.of([("b-key", "string"), ("a", "int64")]), "ts", None, 0, FEATURES, "p"
    ),
]
_decode = msgspec.json.Decoder().decode
_sorted = msgspec.json.Encoder(order="sorted").encode

EDGE_NUMBERS = [
    "0",
    "-0",
    "1",
    "-1",
    "1.5",
    "-0.0",
    "1E2",
    "1e-400",
    "1e400",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "1" + "0" * 320,
    "3.4028234663852886e38",
    "3.4028235e38",
    "3.402823466385289e38",
    "-3.5e38",
    "1.7976931348623157e308",
    "123456789012345678901",
    "0.1",
    "true",
    "false",
    "null",
    '"1"',
    '"x"',
    "[]",
    "{}",
]
EDGE_STRINGS = [
    '""',
    '"a"',
    '"\\u0000"',
    '"a\\u0000b"',
    '"\\ud800"',
    '"\\ud83d\\ude00"',
    '"\xc3\xa9"',
    '"\xff"',
]
EDGE_STRINGS += ['"\xed\xa0\x80"', '"tab\\t\\"q\\""', "1", "null", "true"]
STAMPS = [
    (NOW - timedelta(minutes=5)).isoformat(),
    (NOW - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
    (NOW - timedelta(minutes=5)).replace(tzinfo=None).isoformat(),
    (NOW + timedelta(minutes=4)).isoformat(),
    (NOW + timedelta(minutes=6)).isoformat(),
    (NOW - timedelta(days=2)).isoformat(),
    (NOW - timedelta(days=400)).isoformat(),
    "2026-12-01T13:55:00+02:00",
    "2026-12-01T06:55:00.123456789-05:00",
    "2026-12-01 11:55:00+00:00",
    "20261201T115500Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "not a time",
    "",
]
STAMP_VALUES = [json.dumps(s) for s in STAMPS] + ["1", "null", "true"]


GOOD = {
    "float64": [
        "1",
        "1.5",
        "-0.0",
        "0.1",
        "1E2",
        "-0",
        "9223372036854775807",
        "1.7976931348623157e308",
        "null",
    ],
    "float32": ["1", "2.5", "-0.0", "1e-400", "3.4028234663852886e38", "-9223372036854775808", "null"],
    "int64": ["0", "-1", "9223372036854775807", "-9223372036854775808", "null"],
    "int32": ["0", "-0", "2147483647", "-2147483648", "null"],
    "bool": ["true", "false", "null"],
    "string": ['"a"', '""', '"\\ud83d\\ude00"', '"\xc3\xa9"', '"tab\\t\\"q\\""', "null"],
}
GOOD_STAMPS = [json.dumps(s) for s in STAMPS[:4]] + ['"2026-12-01T13:55:00+02:00"']


def _value_texts(kind: str, *, key: bool = False) -> list[str]:
    good = [v for v in GOOD[kind] if not (key and v == "null")]
    odd = EDGE_STRINGS if kind == "string" else EDGE_NUMBERS + EDGE_STRINGS[:2]
    return good * 6 + odd  # mostly good values: rows with one odd value are the interesting ones


def _row_text(draw: Callable[[st.SearchStrategy[Any]], Any], view: ViewSpec) -> bytes:
    """A row's JSON: each column a good or odd value, sometimes missing, an extra or duplicate column."""
    pairs: list[tuple[str, str]] = []
    for name, kind in zip(view.key.join_keys, view.key.kinds, strict=True):
        pairs.append((name, draw(st.sampled_from(_value_texts(kind, key=True)))))
    pairs.append((view.timestamp_field, draw(st.sampled_from(GOOD_STAMPS * 8 + STAMP_VALUES))))
    if view.created_field and draw(st.booleans()):
        pairs.append((view.created_field, draw(st.sampled_from([*GOOD_STAMPS * 4, *STAMP_VALUES, "null"]))))
    for feature in view.features:
        pairs.append((feature.name, draw(st.sampled_from(_value_texts(feature.kind)))))
    pairs = list(draw(st.permutations(pairs)))
    odd = draw(st.sampled_from(["none"] * 12 + ["drop", "extra", "duplicate"]))
    if odd == "drop" and pairs:
        pairs.pop(draw(st.integers(0, len(pairs) - 1)))
    elif odd == "extra":
        pairs.append(("unknown", "1"))
    elif odd == "duplicate" and pairs:
        name, _ = pairs[draw(st.integers(0, len(pairs) - 1))]
        pairs.append((name, draw(st.sampled_from(EDGE_NUMBERS))))
    space: str = draw(st.sampled_from(["", " ", "\n "]))
    body = ("," + space).join(f"{json.dumps(name)}:{space}{value}" for name, value in pairs)
    return ("{" + space + body + space + "}").encode()


def _good_row(view: ViewSpec, index: int) -> bytes:
    row: dict[str, Any] = {}
    for name, kind in zip(view.key.join_keys, view.key.kinds, strict=True):
        row[name] = f"k{index}é" if kind == "string" else index
    row[view.timestamp_field] = (NOW - timedelta(seconds=index)).isoformat()
    values = {
        "float64": 0.25 * index,
        "float32": index,
        "int64": -index,
        "int32": 7,
        "bool": True,
        "string": "s",
    }
    for feature in view.features:
        row[feature.name] = values[feature.kind] if index % 5 else None
    return json.dumps(row, ensure_ascii=False).encode()


def _slow(view: ViewSpec, texts: list[bytes]) -> ValidRows | None:
    """`validate_rows` on the rows as the generic decoder reads them; None when it refuses them."""
    try:
        rows = [_decode(text) for text in texts]
    except msgspec.DecodeError:
        return None
    if not all(isinstance(row, dict) for row in rows):
        return None
    try:
        return validate_rows(view, rows, now=NOW, max_age_s=86_400, clock_skew_s=300)
    except PushError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (1 and 1.0 differ; -0.0 and 0.0 differ), recursively."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.copysign(1, a) == math.copysign(1, b) and a == b
    return type(a) is type(b) and a == b


def _check(view: ViewSpec, texts: list[bytes]) -> bool:
    """Compare both paths on `texts`; returns whether the fast one accepted them."""
    fast = typed_rows(view, texts, now=NOW, max_age_s=86_400, clock_skew_s=300)
    slow = _slow(view, texts)
    if fast is None:
        return False
    assert slow is not None, texts
    valid, sorted_rows = fast
    assert _same(valid.entity_ids, slow.entity_ids)
    assert valid.event_ts == slow.event_ts
    assert [t.tzinfo for t in valid.event_ts] == [t.tzinfo for t in slow.event_ts]
    assert valid.created == slow.created
    assert valid.values.keys() == slow.values.keys()
    for name in slow.values:
        assert _same(valid.values[name], slow.values[name]), name
    assert sorted_rows == [_sorted(_decode(text)) for text in texts]
    return True


@pytest.mark.parametrize("view", VIEWS, ids=["int64", "int32+created", "string+created", "composite"])
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_accepts_only_what_validate_rows_accepts(view: ViewSpec, data: st.DataObject) -> None:
    """One generated row at a time: accepted by the fast path means accepted by `validate_rows`, with the
    same ids, times, values (and their types) and the same sorted-key JSON."""
    _check(view, [_row_text(data.draw, view)])


@pytest.mark.parametrize("view", VIEWS, ids=["int64", "int32+created", "string+created", "composite"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_bad_row_sends_the_whole_group_to_the_slow_path(view: ViewSpec, data: st.DataObject) -> None:
    """Good rows with one generated row among them: the group is accepted only when `validate_rows`
    accepts all of it."""
    texts = [_good_row(view, i) for i in range(1, 8)]
    texts.insert(data.draw(st.integers(0, len(texts))), _row_text(data.draw, view))
    _check(view, texts)


@pytest.mark.parametrize("view", VIEWS, ids=["int64", "int32+created", "string+created", "composite"])
def test_good_rows_take_the_fast_path(view: ViewSpec) -> None:
    """Well-formed rows (nulls, ints for floats, non-ASCII keys) are all decoded by the fast path."""
    assert _check(view, [_good_row(view, i) for i in range(40)])


def test_a_created_time_may_be_absent_or_null_and_stays_as_sent_in_the_key() -> None:
    """No created time, or null: `now`; the sorted JSON keeps an explicit null and leaves out an absent one."""
    view = VIEWS[1]
    base = {"id": 1, "ts": NOW.isoformat(), "f64": 1, "f32": 2.5, "i64": 3}
    texts = [json.dumps(base).encode(), json.dumps({**base, "created": None}).encode()]
    assert _check(view, texts)
    fast = typed_rows(view, texts, now=NOW, max_age_s=86_400, clock_skew_s=300)
    assert fast is not None
    assert fast[0].created == [NOW, NOW]
    assert b"created" not in fast[1][0]
    assert b'"created":null' in fast[1][1]
