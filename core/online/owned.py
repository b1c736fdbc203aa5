"""Undoing one's own writes: set or delete a view's fields of an entity only while a field still holds a
given value (the run id a failed publish wrote), as one atomic script per entity.

A publish that fails half-way puts back what was there before it, for the entities it wrote. Another
writer may have replaced some of those rows meanwhile (a stream re-score newer than the failed run): the
check-and-write runs in Redis, so such a row is left alone. Sent by body (`EVAL`): a restore is rare.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from core.features.keys import EntityKey
from core.online.encoding import encode_timestamps, encode_values, feature_field, timestamp_field
from core.online.keys import encode_keys
from core.online.rows import FeatureRows
from core.online.wire import command

__all__ = ["OWNED_SCRIPT", "owner_value", "pack_owned_deletes", "pack_owned_writes"]

OWNED_SCRIPT = b"""
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == 'del' then redis.call('HDEL', KEYS[1], unpack(ARGV, 4))
else redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
return 1
"""
"""KEYS[1] the entity's key; ARGV: the owner field, the value it must hold, `set` or `del`, then the
(field, value) pairs to set or the fields to delete. Returns 1 when it acted, 0 when the owner changed."""


def owner_value(value: str) -> bytes:
    """The stored bytes of a string feature `value` (what the owner field holds)."""
    return encode_values("string", np.array([value], dtype=object))[0]


def pack_owned_writes(project: str, rows: FeatureRows, *, owner_field: bytes, owner: bytes) -> bytes:
    """Per row: write it (timestamp first, then the features) only where `owner_field` holds `owner`."""
    count = len(rows)
    if count == 0:
        return b""
    keys = encode_keys(rows.key, rows.entity_ids, project=project)
    stamps = encode_timestamps(rows.event_timestamps, count)
    fields = [feature_field(rows.view, column.name) for column in rows.columns]
    values = [encode_values(column.kind, column.values) for column in rows.columns]
    ts_field = timestamp_field(rows.view)
    out = []
    for row, key in enumerate(keys):
        pairs = [part for field, column in zip(fields, values, strict=True) for part in (field, column[row])]
        out.append(
            command(
                b"EVAL", OWNED_SCRIPT, b"1", key, owner_field, owner, b"set", ts_field, stamps[row], *pairs
            )
        )
    return b"".join(out)


def pack_owned_deletes(
    project: str,
    *,
    key: EntityKey,
    entity_ids: npt.NDArray[Any],
    fields: Sequence[bytes],
    owner_field: bytes,
    owner: bytes,
) -> bytes:
    """Per entity: delete `fields` only where `owner_field` holds `owner`."""
    keys = encode_keys(key, entity_ids, project=project)
    return b"".join(
        command(b"EVAL", OWNED_SCRIPT, b"1", key, owner_field, owner, b"del", *fields) for key in keys
    )
