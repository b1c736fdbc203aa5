"""Pushed rows to online rows: each entity's newest row (ties: the later one), typed columns when there are
no nulls, and the same online bytes as the object columns they replace (no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from core.features.keys import EntityId, EntityKey
from core.features.specs import ViewSpec
from core.online.encoding import encode_values
from core.push.rows import ValidRows, newest_per_entity, online_rows
from tests.feature_kinds import EVERY_KIND

NOW = datetime(2026, 12, 1, tzinfo=UTC)
FEATURES = EVERY_KIND


def _rows(key: EntityKey, *, nulls: bool, seed: int) -> ValidRows:
    rng = random.Random(seed)
    view = ViewSpec("v", "public.v", key, "ts", None, 0, FEATURES, "p")
    count = 300
    ids = [rng.randrange(40) for _ in range(count)]
    values: dict[str, list[Any]] = {
        "a": [rng.uniform(-1e6, 1e6) for _ in range(count)],
        "b": [float(rng.randrange(-5, 5)) for _ in range(count)],
        "c": [rng.randrange(-(2**63), 2**63) for _ in range(count)],
        "d": [rng.randrange(-(2**31), 2**31) for _ in range(count)],
        "e": [rng.random() < 0.5 for _ in range(count)],
        "f": [f"s{rng.randrange(9)}" for _ in range(count)],
    }
    if nulls:
        for column in values.values():
            column[rng.randrange(count)] = None
    entity_ids: list[EntityId] = [str(i) if key.int_kind is None else i for i in ids]
    return ValidRows(
        view=view,
        entity_ids=entity_ids,
        event_ts=[NOW - timedelta(seconds=rng.randrange(5)) for _ in range(count)],  # many ties
        created=[NOW] * count,
        values=values,
    )


@pytest.mark.parametrize(
    "key", [EntityKey.single("id"), EntityKey.single("id", "string")], ids=["int", "string"]
)
@pytest.mark.parametrize("nulls", [False, True])
def test_online_rows_are_the_newest_per_entity_with_the_same_bytes(key: EntityKey, nulls: bool) -> None:
    """The chosen rows are `newest_per_entity`'s (the later row of equal times), in row order, and every
    column encodes to the bytes of the plain values."""
    for seed in range(5):
        rows = _rows(key, nulls=nulls, seed=seed)
        chosen = newest_per_entity(rows)
        online = online_rows(rows)
        assert online.entity_ids.tolist() == [rows.entity_ids[i] for i in chosen]
        assert isinstance(online.event_timestamps, np.ndarray)
        assert online.event_timestamps.tolist() == [rows.event_ts[i].replace(tzinfo=None) for i in chosen]
        for column in online.columns:
            plain = [rows.values[column.name][i] for i in chosen]
            assert encode_values(column.kind, column.values) == encode_values(column.kind, plain)
            typed = column.kind != "string" and None not in plain
            assert isinstance(column.values, np.ndarray)
            assert (column.values.dtype != np.dtype(object)) == typed
