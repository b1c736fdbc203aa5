"""Decoding HMGET replies a field at a time (core.online.columns, `ReadLayout.decode_all`) gives exactly the
rows `ReadLayout.decode` gives one at a time: for every value shape (the common ones, nulls, missing fields,
other encodings protobuf accepts), and malformed bytes still raise ValueError."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime, timedelta

import pytest

from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.online.columns import decode_stamps, decode_values
from core.online.decoding import decode_timestamp, value_decoder
from core.online.encoding import encode_timestamps, encode_values
from core.online.wire import ReadLayout

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
KEY = EntityKey.single("customer_id")
STATS = ViewSpec(
    "stats", "s", KEY, "ts", None, 0,
    (FeatureSpec("amount", "float64"), FeatureSpec("ratio", "float32"), FeatureSpec("count", "int64")),
)  # fmt: skip
PROFILE = ViewSpec(
    "profile", "p", KEY, "ts", None, 0, (FeatureSpec("tier", "string"), FeatureSpec("vip", "bool"))
)
SERVICE = ServiceSpec(
    "svc", (STATS, PROFILE), ("stats:amount", "stats:ratio", "stats:count", "profile:tier", "profile:vip")
)
PREDICTIONS = ViewSpec(
    "preds", "t", KEY, "ts", None, 0,
    (FeatureSpec("score", "float64"), FeatureSpec("model_version", "string"), FeatureSpec("run_id", "string"),
     FeatureSpec("feature_snapshot_ts", "string")),
)  # fmt: skip
SNAPSHOT = '{"stats":"2026-12-02T11:00:00+00:00","profile":null}'


def _one(kind: str, value: object) -> bytes:
    return encode_values(kind, [value])[0]  # type: ignore[arg-type]  # a literal kind


def _ts(moment: datetime) -> bytes:
    return encode_timestamps(moment, 1)[0]


CELLS: dict[str, list[bytes | None]] = {  # what each field may hold, the odd shapes included
    "float64": [_one("float64", 2.5), _one("float64", -0.0), _one("float64", 1e300), b"", None,
                b"\x29" + struct.pack("<d", 7.0) + b"\x29" + struct.pack("<d", 8.0),  # the last field wins
                _one("int64", 3), _one("float32", 1.5)],
    "float32": [_one("float32", 0.1), _one("float32", 3.0e38), b"", None, _one("float64", 0.25)],
    "int64": [_one("int64", 0), _one("int64", -5), _one("int64", 2**62), b"", None],
    "string": [_one("string", "gold"), _one("string", "日本"), _one("string", ""), b"", None],
    "bool": [_one("bool", True), _one("bool", False), b"", None],
    "ts": [_ts(NOW), _ts(NOW - timedelta(hours=3, microseconds=7)), _ts(NOW - timedelta(days=400)), None],
    "score": [_one("float64", 0.25), None], "model_version": [_one("string", "v1"), None],
    "run_id": [_one("string", "run-1")], "feature_snapshot_ts": [_one("string", SNAPSHOT), _one("string", "{")],
}  # fmt: skip
FIELD_KINDS = ["float64", "float32", "int64", "string", "bool", "ts", "ts", "score", "model_version", "run_id",
               "feature_snapshot_ts", "ts"]  # fmt: skip


def _layout() -> ReadLayout:
    return ReadLayout(project="proj", service=SERVICE, predictions=PREDICTIONS)


def _replies(rng: random.Random, count: int, *, uniform: bool) -> list[list[bytes | None]]:
    """Replies of random cells (`uniform`: each field's first, common shape only, the fast road)."""
    return [
        [CELLS[kind][0] if uniform else rng.choice(CELLS[kind]) for kind in FIELD_KINDS] for _ in range(count)
    ]


@pytest.mark.parametrize("uniform", [True, False])
def test_decode_all_equals_decode_row_by_row(uniform: bool) -> None:
    """Many replies, common or mixed shapes: the rows a field at a time are the rows one at a time."""
    layout, rng = _layout(), random.Random(uniform)
    assert len(layout.fields()) == len(FIELD_KINDS)
    for count in (0, 1, 2, 50, 1_000):
        replies = _replies(rng, count, uniform=uniform)
        ids = list(range(count))
        assert layout.decode_all(ids, replies) == [
            layout.decode(i, raw) for i, raw in zip(ids, replies, strict=True)
        ]


def test_malformed_values_and_replies_still_raise() -> None:
    """A truncated value, a reply of the wrong length or a count that does not match: ValueError."""
    layout = _layout()
    good = _replies(random.Random(1), 3, uniform=True)
    broken = [list(raw) for raw in good]
    broken[1][0] = b"\x29\x00\x01"  # a truncated double
    with pytest.raises(ValueError, match="truncated"):
        layout.decode_all([1, 2, 3], broken)
    with pytest.raises(ValueError, match="field values"):
        layout.decode_all([1, 2, 3], [*good[:2], good[2][:-1]])
    with pytest.raises(ValueError, match="replies"):
        layout.decode_all([1, 2], good)


@pytest.mark.parametrize("kind", ["float64", "float32", "int64", "string", "bool"])
def test_a_column_equals_its_decoder_mapped(kind: str) -> None:
    """Every column of random cells of a kind (and each cell alone) decodes as the one-value decoder does."""
    rng, decoder = random.Random(kind), value_decoder(kind)
    cells = CELLS[kind]
    for column in [[cell] for cell in cells] + [[rng.choice(cells) for _ in range(30)] for _ in range(100)]:
        assert decode_values(kind, decoder, column) == [decoder(cell) for cell in column]
    stamps = [rng.choice(CELLS["ts"]) for _ in range(100)]
    assert decode_stamps(stamps) == [None if data is None else decode_timestamp(data) for data in stamps]
