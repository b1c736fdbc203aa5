"""Stored predictions as COPY tuples: every row carries its own id text, score and snapshot, whether rows are
packed as grouped structured arrays (few snapshots) or one by one (a snapshot per row)."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from core.batch.copy import COPY_COLUMNS, copy_tuples

RUN = uuid.UUID("12345678-1234-5678-1234-567812345678")
AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
AT_PG_US = (AT - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _parse(data: bytes) -> list[tuple[Any, ...]]:
    rows, pos = [], 0
    while pos < len(data):
        (count,) = struct.unpack_from(">h", data, pos)
        assert count == len(COPY_COLUMNS)
        pos += 2
        fields = []
        for _ in range(count):
            (size,) = struct.unpack_from(">i", data, pos)
            fields.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size
        run, key, score, version, ts, snapshot = fields
        rows.append(
            (
                uuid.UUID(bytes=run),
                key.decode(),
                struct.unpack(">d", score)[0],
                version.decode(),
                struct.unpack(">q", ts)[0],
                snapshot.decode(),
            )
        )
    return sorted(rows)


@pytest.mark.parametrize("snapshot_count", [1, 3, 400])  # grouped, grouped, row by row
@pytest.mark.parametrize("kind", ["int", "string"])
def test_every_row_round_trips(snapshot_count: int, kind: str) -> None:
    rng = np.random.default_rng(snapshot_count)
    size = 400
    ids: np.ndarray[Any, Any]
    if kind == "int":
        ids = rng.integers(-(2**63), 2**63 - 1, size, dtype=np.int64)
        ids[:3] = [0, -(2**63), 2**63 - 1]
    else:
        ids = np.array([f'[{n},"Zürich-{n % 7}"]' for n in range(size)], dtype=object)
    scores = rng.random(size)
    codes = rng.integers(0, snapshot_count, size).astype(np.intp)
    snapshots = [
        f'{{"view": "2026-12-0{n % 9 + 1}T00:00:00+00:00", "n": {n}}}' for n in range(snapshot_count)
    ]
    data = b"".join(
        copy_tuples(
            run_id=RUN,
            model_version="model-v1",
            scored_at=AT,
            entity_ids=ids,
            scores=scores,
            snapshot_codes=codes,
            snapshots=snapshots,
        )
    )
    expected = sorted(
        (RUN, str(entity), float(score), "model-v1", AT_PG_US, snapshots[code])
        for entity, score, code in zip(ids.tolist(), scores.tolist(), codes.tolist(), strict=True)
    )
    assert _parse(data) == expected
