"""Publish a run's stored predictions to the online store, and undo a publish that failed half-way.

Rows go to the online store as the Feast view of stored scores with a newer-wins write keyed on the row's
`scored_at` (its event time in the view): a score computed as of an older moment never replaces a newer one,
whichever kind of run wrote either (the nightly batch run scored as of 02:00 and published at 02:40 keeps
the stream re-score of 02:10), and an equally new one does (a rerun). If the write fails part-way, every
entity of the run whose online row still carries the failed run's id gets back its newest published score
from PostgreSQL (or loses the stored score if it has none); rows another writer replaced meanwhile are left
alone (the check and the write are one script in Redis). So a failed run leaves the online store as the
published runs left it.
"""

from __future__ import annotations

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
from core.records.stored_scores import latest_published_rows

__all__ = ["PublishBatch", "publish_rows", "restore_previous"]

_PIPELINE_ROWS = 5_000
_RESTORE_ROWS = 10_000
_MANY_PER_CALL = 256  # entities per newer-wins script call (core.online.newer_wins_many)


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
    """Write every row not older than the online one (newer-wins on `scored_at`, ties win); returns how
    many were written. On failure raises, having sent a prefix of the rows (`progress(rows)` has been told
    of each acknowledged chunk)."""
    rows = batch.rows(view)
    batch_rows = min(chunk_rows, _PIPELINE_ROWS)
    if len(rows) <= batch_rows:  # one request (a stream re-score): no pipeline to set up
        return store.write_newer(rows, ties_win=True, per_call=_MANY_PER_CALL, progress=progress)
    # Batches of at most 5,000 rows: the next batch is encoded while Redis executes the previous one.
    return store.write_newer(rows, ties_win=True, batch_rows=batch_rows, progress=progress)


def restore_previous(
    store: OnlineStore,
    conn: psycopg.Connection[Any],
    *,
    view: ViewSpec,
    entity_ids: npt.NDArray[Any],
    model_name: str,
    failed_run_id: str,
) -> int:
    """Undo a failed publish of run `failed_run_id` for `entity_ids`: where an entity's online row still
    carries that run id, put back its newest published score (`scored_at` order, any kind of run), or remove
    it when there is none. Returns how many rows were restored or removed."""
    key = view.key
    done = 0
    for start in range(0, len(entity_ids), _RESTORE_ROWS):
        ids = entity_ids[start : start + _RESTORE_ROWS]
        rows = latest_published_rows(conn, model_name=model_name, entity_keys=key.texts(ids))
        restored: set[Any] = set()
        for (scored_at, version, run_id), group in _by_publication(rows).items():
            batch = PublishBatch(
                entity_ids=key.array([key.from_text(row[0]) for row in group]),
                scores=np.array([row[1] for row in group], dtype=np.float64),
                model_version=version,
                run_id=run_id,
                snapshots=np.array([row[5] for row in group], dtype=object),
                scored_at=scored_at,
            )
            done += store.restore_owned(batch.rows(view), owner_run_id=failed_run_id)
            restored.update(key.from_text(row[0]) for row in group)
        orphans = key.array([entity_id for entity_id in ids.tolist() if entity_id not in restored])
        done += store.delete_owned(view, orphans, owner_run_id=failed_run_id)
    return done


def _by_publication(rows: list[tuple[Any, ...]]) -> dict[tuple[datetime, str, str], list[tuple[Any, ...]]]:
    """Rows of `LATEST_PUBLISHED_SQL` grouped by what a PublishBatch shares: scored_at, version, run id."""
    groups: dict[tuple[datetime, str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault((row[4], str(row[2]), str(row[3])), []).append(row)
    return groups
