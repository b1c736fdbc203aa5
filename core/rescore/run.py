"""One stream re-score: the touched entities of one model whose online features moved past their stored
score, scored in one call and stored and published like a batch run (a prediction run of kind `stream`).

1. read: the entities' online rows (features, event times, stored score) in one pipelined round trip;
2. select: the blend policy's own test (core.rescore.select); nothing selected, no run;
3. score: one vectorised call on the live path's input matrix (core.serving.answer.live_matrix): the
   stored score equals the live score of the same features;
4. copy: the run row (inserted as `publishing`) and its rows (binary COPY) in one transaction;
5. publish: newer-wins on `scored_at` (the moment before the read): a newer score online (a later flush,
   a nightly run as of a later moment) is kept; on failure the rows still carrying the run's id get the
   newest published score back and the run is marked failed;
6. published, then this model's older stream rows of these entities pruned (core.records.stored_scores), in
   one transaction, the pruning in a savepoint (a failed pruning leaves the run published).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.batch.copy import COPY_COLUMNS, COPY_HEADER, COPY_TRAILER, copy_tuples
from core.batch.publish import PublishBatch, publish_rows, restore_previous
from core.errors import first_line
from core.features.keys import EntityId
from core.online.store import OnlineStore
from core.records.prediction_runs import insert_run, set_run_status
from core.records.stored_scores import prune_stream_runs
from core.rescore.select import Selection, select_changed, snapshot_texts
from core.rescore.targets import RescoreTarget
from core.serving.answer import live_matrix

__all__ = ["RescoreResult", "rescore_entities"]


logger = logging.getLogger(__name__)

_COPY_SQL = f"COPY tandem.batch_predictions ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RescoreResult:
    """What one re-score of one model did. `run_id` None: no touched entity needed a new score."""

    model_name: str
    run_id: uuid.UUID | None
    scored_at: datetime
    touched: int
    rescored: int = 0
    published: int = 0  # written online; the others already had a newer score online
    reasons: dict[str, int] = field(default_factory=dict)  # policy reason -> touched entities
    stage_seconds: dict[str, float] = field(default_factory=dict)


class _Laps:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.mark = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.mark
        self.mark = now


def _store(
    conn: Connection, target: RescoreTarget, *, run_id: uuid.UUID, batch: PublishBatch, codes: np.ndarray,
    snapshots: list[str],
) -> None:  # fmt: skip
    """The run (status publishing) and its rows, in one transaction: a crash leaves neither. Three round
    trips: the run's INSERT, the COPY, the COMMIT."""
    with Session(bind=conn) as session, session.begin():
        insert_run(
            session,
            run_id=run_id,
            model_name=target.name,
            model_version=target.model.version,
            feature_service=target.feature_service,
            as_of=batch.scored_at,
            kind="stream",
            status="publishing",
            rows=len(batch.entity_ids),
        )
        raw = _driver(session.connection())
        with raw.cursor() as cur, cur.copy(_COPY_SQL) as copy:
            copy.write(COPY_HEADER)
            for block in copy_tuples(
                run_id=run_id,
                model_version=batch.model_version,
                scored_at=batch.scored_at,
                entity_ids=batch.entity_ids,
                scores=batch.scores,
                snapshot_codes=codes,
                snapshots=snapshots,
            ):
                copy.write(block)
            copy.write(COPY_TRAILER)


def _mark_published(
    conn: Connection, target: RescoreTarget, *, run_id: uuid.UUID, stage_seconds: dict[str, float],
    entity_keys: list[str],
) -> None:  # fmt: skip
    """The run marked published, then this model's older stream rows of these entities pruned, in one
    transaction; the pruning in a savepoint of its own: if it fails (e.g. a deadlock with another process
    pruning), it is logged and the run stays published (the next flush or batch run prunes them)."""
    with Session(bind=conn) as session, session.begin():
        set_run_status(session, run_id=run_id, status="published", stage_seconds=stage_seconds)
        try:
            with session.begin_nested():
                prune_stream_runs(session, model_name=target.name, entity_keys=entity_keys)
        except SQLAlchemyError as exc:
            logger.warning("pruning stream runs of model %s failed: %s", target.name, first_line(exc))


def _undo(
    engine: Engine, online: OnlineStore, target: RescoreTarget, *, run_id: uuid.UUID, batch: PublishBatch,
    exc: BaseException, stage_seconds: dict[str, float],
) -> None:  # fmt: skip
    """After a failed publish: the rows still carrying the run's id get the newest published score back, and
    the run is marked failed (on connections of their own: the failure may be PostgreSQL's)."""
    try:
        with engine.connect() as conn:
            restore_previous(
                online,
                _driver(conn),
                view=target.predictions,
                entity_ids=batch.entity_ids,
                model_name=target.name,
                failed_run_id=str(run_id),
            )
    finally:
        with Session(engine) as session, session.begin():
            set_run_status(
                session, run_id=run_id, status="failed", error=first_line(exc), stage_seconds=stage_seconds
            )


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy one (COPY and the restore speak psycopg)."""
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection, got {type(driver).__name__}")
    return driver


def _batch(target: RescoreTarget, selection: Selection, *, run_id: uuid.UUID, scored_at: datetime) -> tuple[
    PublishBatch, np.ndarray, list[str]
]:  # fmt: skip
    """Score the selected rows in one call; the batch to store and publish, snapshot codes and texts."""
    rows = selection.rows
    scores = target.model.predict_scores(live_matrix(rows, target.service, target.model.feature_refs))
    texts = snapshot_texts(rows, target.service)
    snapshots = list(dict.fromkeys(texts))
    index = {text: code for code, text in enumerate(snapshots)}
    batch = PublishBatch(
        entity_ids=target.predictions.key.array(selection.entity_ids),
        scores=np.ascontiguousarray(scores, dtype=np.float64),
        model_version=target.model.version,
        run_id=str(run_id),
        snapshots=np.array(texts, dtype=object),
        scored_at=scored_at,
    )
    return batch, np.array([index[text] for text in texts], dtype=np.intp), snapshots


def rescore_entities(
    engine: Engine,
    online: OnlineStore,
    target: RescoreTarget,
    entity_ids: Sequence[EntityId],
    *,
    max_staleness_s: float,
    clock: Callable[[], datetime] = _utcnow,
) -> RescoreResult:
    """Re-score the entities of `entity_ids` whose online features moved past their stored score (see the
    module doc). Raises on a store failure (StoreUnavailableError for Redis), after marking a run that was
    stored failed and putting back what its publish replaced."""
    ids = list(dict.fromkeys(entity_ids))
    laps = _Laps()
    scored_at = clock()  # the features read next are the entity's features as of this moment
    rows = online.read(target.layout, ids, batch=max(len(ids), 1))
    laps.lap("read")
    selection = select_changed(
        rows,
        service=target.service,
        model_version=target.model.version,
        now=scored_at,
        max_staleness_s=max_staleness_s,
    )
    laps.lap("select")
    if not selection.rows:
        return RescoreResult(
            target.name, None, scored_at, len(ids), reasons=selection.reasons, stage_seconds=laps.seconds
        )
    run_id = uuid.uuid4()
    batch, codes, snapshots = _batch(target, selection, run_id=run_id, scored_at=scored_at)
    laps.lap("score")
    with engine.connect() as conn:  # one checkout (and liveness ping) for the run's two transactions
        _store(conn, target, run_id=run_id, batch=batch, codes=codes, snapshots=snapshots)
        laps.lap("copy")
        try:
            written = publish_rows(
                online, view=target.predictions, batch=batch, chunk_rows=len(batch.entity_ids)
            )
        except BaseException as exc:
            _undo(engine, online, target, run_id=run_id, batch=batch, exc=exc, stage_seconds=laps.seconds)
            raise
        laps.lap("publish")
        _mark_published(
            conn, target, run_id=run_id, stage_seconds=dict(laps.seconds),
            entity_keys=target.predictions.key.texts(batch.entity_ids),
        )  # fmt: skip
    laps.lap("record")
    return RescoreResult(
        model_name=target.name,
        run_id=run_id,
        scored_at=scored_at,
        touched=len(ids),
        rescored=len(batch.entity_ids),
        published=written,
        reasons=selection.reasons,
        stage_seconds=laps.seconds,
    )
