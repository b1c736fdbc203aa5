"""The many-entities newer-wins calls carry every argument as a RESP bulk string framed exactly as one by one
(`$<length>\\r\\n<bytes>\\r\\n`), whether numpy frames a column of equal-length values or Python frames
mixed lengths (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from core.features.keys import EntityKey
from core.online.encoding import encode_timestamps, encode_values, feature_field, timestamp_field
from core.online.keys import encode_keys
from core.online.newer_wins_many import NEWER_WINS_MANY_SHA, pack_newer_writes_many
from core.online.rows import FeatureColumn, FeatureRows


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _reference(project: str, rows: FeatureRows, per_call: int) -> bytes:
    """The calls built one value at a time."""
    keys = encode_keys(rows.key, rows.entity_ids, project=project)
    stamps = encode_timestamps(rows.event_timestamps, len(rows))
    columns = [encode_values(c.kind, c.values) for c in rows.columns]
    width = len(columns)
    tail = _bulk(timestamp_field(rows.view)) + _bulk(b"%d" % (rows.key_ttl_s or 0)) + _bulk(b"%d" % width)
    tail += b"".join(_bulk(feature_field(rows.view, c.name)) for c in rows.columns)
    out = b""
    for start in range(0, len(rows), per_call):
        stop = min(start + per_call, len(rows))
        entities = stop - start
        out += b"*%d\r\n" % (2 + 1 + entities + 3 + width + entities * (1 + width))
        out += _bulk(b"EVALSHA") + _bulk(NEWER_WINS_MANY_SHA) + _bulk(b"%d" % entities)
        out += b"".join(_bulk(k) for k in keys[start:stop]) + tail
        for i in range(start, stop):
            out += _bulk(stamps[i]) + b"".join(_bulk(column[i]) for column in columns)
    return out


def _rows(count: int, *, key: EntityKey, nulls: bool, seed: int) -> FeatureRows:
    rng = np.random.default_rng(seed)
    doubles = rng.normal(size=count) * 1e6
    ints = rng.integers(-(2**40), 2**40, count)
    if nulls and count:
        doubles[0] = np.nan
    strings = np.empty(count, dtype=object)
    strings[:] = [
        None if nulls and i == 1 else "x" * int(n) for i, n in enumerate(rng.integers(0, 300, count))
    ]
    ids = (
        rng.integers(0, 10**12, count)
        if key.int_kind
        else np.array([f"k{i}" for i in range(count)], dtype=object)
    )
    base = np.datetime64(datetime(2026, 12, 1, tzinfo=UTC).replace(tzinfo=None), "us")
    stamps = base + rng.integers(-(10**12), 10**12, count).astype("m8[us]")
    if count > 3:
        stamps[3] = np.datetime64("1970-01-01T00:00:01", "us")  # a shorter Timestamp: mixed lengths
    return FeatureRows(
        view="v",
        key=key,
        entity_ids=ids,
        columns=(
            FeatureColumn("d", "float64", doubles),
            FeatureColumn("i", "int64", ints),
            FeatureColumn("b", "bool", rng.random(count) < 0.5),
            FeatureColumn("s", "string", strings),
        ),
        event_timestamps=stamps,
        key_ttl_s=3600 if seed % 2 else None,
    )


@pytest.mark.parametrize(
    "key", [EntityKey.single("id"), EntityKey.single("id", "string")], ids=["int", "string"]
)
@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize(("count", "per_call"), [(1, 256), (15, 4), (17, 256), (700, 256), (700, 1)])
def test_the_calls_frame_every_value_as_one_by_one(
    key: EntityKey, nulls: bool, count: int, per_call: int
) -> None:
    """Byte for byte the reference framing, for equal and mixed lengths, nulls, any call size."""
    rows = _rows(count, key=key, nulls=nulls, seed=count + per_call)
    payload, calls = pack_newer_writes_many("proj", rows, per_call=per_call)
    assert payload == _reference("proj", rows, per_call)
    assert calls == -(-count // per_call)
