"""Feast's newer-wins rule as Feast applies it (read the stored times, then write): the tests' reference.

Production writes with one atomic Lua script per entity (`core.online.newer_wins`); these read-then-write
pieces are what that script must agree with (unit tests) and what races without it (the race test).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from core.online.decoding import decode_timestamp
from core.online.encoding import timestamp_field
from core.online.keys import encode_keys
from core.online.rows import FeatureRows
from core.online.wire import command

__all__ = ["newer_positions", "pack_hgets"]


def pack_hgets(project: str, rows: FeatureRows) -> bytes:
    """`HGET <key> _ts:<view>` for every row: the stored event times newer-wins compares against."""
    field = timestamp_field(rows.view)
    keys = encode_keys(rows.key, rows.entity_ids, project=project)
    return b"".join(command(b"HGET", key, field) for key in keys)


def newer_positions(rows: FeatureRows, stored: Sequence[bytes | None]) -> list[int]:
    """Positions of the rows whose event time is newer than the stored `_ts` (None: nothing stored).

    Feast's rule: an older or equal event time never replaces the online row, nor a row of the same entity
    written earlier in this batch (the rows are written in order). Compared at microseconds, the precision
    Feast keeps.
    """
    if len(stored) != len(rows):
        raise ValueError(f"{len(stored)} stored timestamps for {len(rows)} rows")
    stamps = rows.event_timestamps
    micros = (
        np.full(len(rows), _micros(stamps), dtype=np.int64)
        if isinstance(stamps, datetime)
        else np.asarray(stamps).astype("datetime64[us]").astype(np.int64)
    )
    keep: list[int] = []
    queued: dict[int, int] = {}  # entity id -> event time of its last row kept in this batch
    rows_seen = zip(rows.entity_ids.tolist(), micros.tolist(), stored, strict=True)
    for position, (entity_id, ours, theirs) in enumerate(rows_seen):
        latest = queued.get(entity_id)
        if latest is None and theirs is not None:
            latest = _micros(decode_timestamp(theirs))
        if latest is None or ours > latest:
            keep.append(position)
            queued[entity_id] = ours
    return keep


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch; naive means UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return int(np.datetime64(moment, "us").astype(np.int64))
