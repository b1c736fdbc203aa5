"""Publish a run's stored predictions to the online store, and undo a publish that failed half-way.

Rows go to Redis as the Feast view of stored scores, byte-identical to Feast's own writer. If the write
fails part-way, the entities already written get their previous published score back (or lose the stored
score if they had none), so a failed run leaves the online store as the previous published run left it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import redis

from core.features.specs import ViewSpec
from core.online.encoding import FeatureColumn, encode_entity_keys, feature_field, timestamp_field
from core.online.writer import write_feature_rows

__all__ = ["InjectedFailureError", "PublishBatch", "publish_rows", "restore_previous"]


class InjectedFailureError(RuntimeError):
    """Raised on purpose by tests (`fail_after_rows`) to prove a half-done run publishes nothing."""


@dataclass(frozen=True, slots=True)
class PublishBatch:
    """The rows of one run, as the stored-scores view's columns."""

    entity_ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    model_version: str
    run_id: str
    snapshots: npt.NDArray[np.object_]  # JSON text per row
    scored_at: datetime


def _columns(batch: PublishBatch, start: int, stop: int) -> list[FeatureColumn]:
    size = stop - start
    return [
        FeatureColumn("score", "float64", batch.scores[start:stop]),
        FeatureColumn("model_version", "string", np.full(size, batch.model_version, dtype=object)),
        FeatureColumn("run_id", "string", np.full(size, batch.run_id, dtype=object)),
        FeatureColumn("feature_snapshot_ts", "string", batch.snapshots[start:stop]),
    ]


def publish_rows(
    client: redis.Redis,
    *,
    project: str,
    view: ViewSpec,
    batch: PublishBatch,
    chunk_rows: int,
    progress: Callable[[int], None] | None = None,
    fail_after_rows: int | None = None,
) -> int:
    """Write every row; returns how many. On failure raises, having written a prefix of the rows."""
    names = {feature.name for feature in view.features}
    expected = {"score", "model_version", "run_id", "feature_snapshot_ts"}
    if names != expected:
        raise ValueError(
            f"view {view.name!r} must have exactly the features {sorted(expected)}, has {sorted(names)}"
        )
    total = len(batch.entity_ids)
    written = 0
    start = 0
    while start < total:
        stop = min(start + chunk_rows, total)
        if fail_after_rows is not None:
            if written >= fail_after_rows:
                raise InjectedFailureError(f"injected failure after {written} of {total} rows were published")
            stop = min(stop, fail_after_rows)
        write_feature_rows(
            client,
            project=project,
            view=view.name,
            join_key=view.join_key,
            entity_ids=batch.entity_ids[start:stop],
            columns=_columns(batch, start, stop),
            event_timestamps=batch.scored_at,
        )
        if progress is not None:
            progress(stop - start)
        written = start = stop
    return written


def restore_previous(
    client: redis.Redis,
    conn: psycopg.Connection[Any],
    *,
    project: str,
    view: ViewSpec,
    entity_ids: npt.NDArray[np.int64],
    previous_run_id: uuid.UUID | None,
) -> int:
    """Put back the previous published scores of `entity_ids`; entities it lacked lose theirs. Returns rows."""
    if len(entity_ids) == 0:
        return 0
    restored: set[int] = set()
    if previous_run_id is not None:
        rows = conn.execute(
            "SELECT entity_id, score, model_version, run_id::text, feature_snapshot_ts, scored_at "
            "FROM tandem.batch_predictions WHERE run_id = %s AND entity_id = ANY(%s)",
            (previous_run_id, entity_ids.tolist()),
        ).fetchall()
        for scored_at in {row[5] for row in rows}:
            group = [row for row in rows if row[5] == scored_at]
            batch = PublishBatch(
                entity_ids=np.array([row[0] for row in group], dtype=np.int64),
                scores=np.array([row[1] for row in group], dtype=np.float64),
                model_version=str(group[0][2]),
                run_id=str(group[0][3]),
                snapshots=np.array([row[4] for row in group], dtype=object),
                scored_at=scored_at,
            )
            publish_rows(client, project=project, view=view, batch=batch, chunk_rows=10_000)
            restored.update(int(row[0]) for row in group)
    orphans = np.array(sorted(set(entity_ids.tolist()) - restored), dtype=np.int64)
    if len(orphans):
        fields = [feature_field(view.name, f.name) for f in view.features] + [timestamp_field(view.name)]
        keys = encode_entity_keys(join_key=view.join_key, entity_ids=orphans, project=project)
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.execute_command("HDEL", key, *fields)  # type: ignore[no-untyped-call]  # redis-py: bytes fields
            pipe.execute()
    return len(restored) + len(orphans)
