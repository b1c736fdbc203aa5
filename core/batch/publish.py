"""Publish a run's stored predictions to the online store, and undo a publish that failed half-way.

Rows go to the online store as the Feast view of stored scores (always overwriting: a run is the newest
publication). If the write fails part-way, the entities already written get their previous published score
back (or lose the stored score if they had none), so a failed run leaves the online store as the previous
published run left it.
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

from core.features.specs import ViewSpec
from core.online.rows import STORED_FEATURES, FeatureColumn, FeatureRows
from core.online.store import OnlineStore

__all__ = ["PublishBatch", "publish_rows", "restore_previous"]

_PIPELINE_ROWS = 5_000


@dataclass(frozen=True, slots=True)
class PublishBatch:
    """The rows of one run, as the stored-scores view's columns."""

    entity_ids: npt.NDArray[Any]  # as core.features.keys makes them
    scores: npt.NDArray[np.float64]
    model_version: str
    run_id: str
    snapshots: npt.NDArray[np.object_]  # JSON text per row
    scored_at: datetime

    def rows(self, view: ViewSpec) -> FeatureRows:
        """The batch as rows of `view` (which must have exactly the stored-score features)."""
        names = {feature.name for feature in view.features}
        if names != set(STORED_FEATURES):
            raise ValueError(
                f"view {view.name!r} must have exactly the features {sorted(STORED_FEATURES)}, has {sorted(names)}"
            )
        size = len(self.entity_ids)
        return FeatureRows(
            view=view.name,
            key=view.key,
            entity_ids=self.entity_ids,
            columns=(
                FeatureColumn("score", "float64", self.scores),
                FeatureColumn("model_version", "string", np.full(size, self.model_version, dtype=object)),
                FeatureColumn("run_id", "string", np.full(size, self.run_id, dtype=object)),
                FeatureColumn("feature_snapshot_ts", "string", self.snapshots),
            ),
            event_timestamps=self.scored_at,
        )


def publish_rows(
    store: OnlineStore,
    *,
    view: ViewSpec,
    batch: PublishBatch,
    chunk_rows: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write every row; returns how many. On failure raises, having written a prefix of the rows
    (`progress(rows)` has been told of each acknowledged chunk)."""
    # Batches of at most 5,000 rows: the next batch is encoded while Redis executes the previous one.
    return store.write(batch.rows(view), batch_rows=min(chunk_rows, _PIPELINE_ROWS), progress=progress)


def restore_previous(
    store: OnlineStore,
    conn: psycopg.Connection[Any],
    *,
    view: ViewSpec,
    entity_ids: npt.NDArray[Any],
    previous_run_id: uuid.UUID | None,
) -> int:
    """Put back the previous published scores of `entity_ids`; entities it lacked lose theirs. Returns rows."""
    if len(entity_ids) == 0:
        return 0
    key = view.key
    restored: set[Any] = set()
    if previous_run_id is not None:
        rows = conn.execute(
            "SELECT entity_key, score, model_version, run_id::text, feature_snapshot_ts, scored_at "
            "FROM tandem.batch_predictions WHERE run_id = %s AND entity_key = ANY(%s)",
            (previous_run_id, key.texts(entity_ids)),
        ).fetchall()
        for scored_at in {row[5] for row in rows}:
            group = [row for row in rows if row[5] == scored_at]
            batch = PublishBatch(
                entity_ids=key.array([key.from_text(row[0]) for row in group]),
                scores=np.array([row[1] for row in group], dtype=np.float64),
                model_version=str(group[0][2]),
                run_id=str(group[0][3]),
                snapshots=np.array([row[4] for row in group], dtype=object),
                scored_at=scored_at,
            )
            publish_rows(store, view=view, batch=batch, chunk_rows=10_000)
            restored.update(key.from_text(row[0]) for row in group)
    orphans = key.array(sorted(set(entity_ids.tolist()) - restored))
    store.delete(view, orphans)
    return len(restored) + len(orphans)
