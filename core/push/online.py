"""Write validated pushed rows online, keeping Feast's rule: never replace a newer online row."""

from __future__ import annotations

import numpy as np
import redis

from core.online.decoding import decode_timestamp
from core.online.encoding import FeatureColumn, encode_entity_keys, timestamp_field
from core.online.writer import write_feature_rows
from core.push.rows import ValidRows, newest_per_entity

__all__ = ["write_pushed_online"]


def write_pushed_online(client: redis.Redis, *, project: str, rows: ValidRows) -> int:
    """Write each entity's newest pushed row unless the online row is as new or newer; returns rows written."""
    view = rows.view
    chosen = newest_per_entity(rows)
    ids = np.array([rows.entity_ids[i] for i in chosen], dtype=np.int64)
    keys = encode_entity_keys(join_key=view.join_key, entity_ids=ids, project=project)
    ts_field = timestamp_field(view.name)
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, ts_field)  # type: ignore[arg-type]  # redis-py accepts bytes names
        current = pipe.execute()
    keep = [
        position
        for position, (index, stored) in enumerate(zip(chosen, current, strict=True))
        if stored is None or rows.event_ts[index] > decode_timestamp(stored)
    ]
    if not keep:
        return 0
    picked = [chosen[p] for p in keep]
    columns = [
        FeatureColumn(f.name, f.kind, np.array([rows.values[f.name][i] for i in picked], dtype=object))
        for f in view.features
    ]
    stamps = np.array([rows.event_ts[i].replace(tzinfo=None) for i in picked], dtype="datetime64[us]")
    return write_feature_rows(
        client,
        project=project,
        view=view.name,
        join_key=view.join_key,
        entity_ids=ids[keep],
        columns=columns,
        event_timestamps=stamps,
    )
