"""Batch-predict: score every entity as of a moment, keep the scores in PostgreSQL, then publish them online.

Stages (timed): features (point-in-time from the offline tables), score (vectorised, in chunks), copy
(binary COPY into `tandem.batch_predictions`, one transaction per run), publish (Redis, as the Feast view
of stored scores, newer-wins on the scores' `scored_at`: an entity whose stream re-score is newer than the
run's as-of time keeps it). A run that fails before or during publishing leaves the published scores served.
Once published, stream rows the run superseded are pruned (core.records.stored_scores).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.batch.copy import COPY_COLUMNS, COPY_HEADER, COPY_TRAILER, copy_tuples
from core.batch.publish import PublishBatch, publish_rows, restore_previous
from core.batch.snapshots import Collected, snapshot_codes, snapshot_json
from core.errors import ConfigurationError, TandemError, first_line
from core.features.snapshots import service_specs
from core.features.specs import ServiceSpec, ViewSpec
from core.model.registry import LoadedModel, load_model
from core.naming import predictions_view_name
from core.offline.point_in_time import FeatureChunk, stream_point_in_time
from core.online.store import OnlineStore
from core.records.prediction_runs import create_run, get_run, set_run_status
from core.records.stored_scores import prune_after_publish
from core.records.tables import ModelVersion
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores

__all__ = ["BatchRunResult", "Progress", "run_batch_predict"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
"""progress(stage, rows done in this stage so far, total rows or None while unknown)."""


@dataclass(frozen=True, slots=True)
class BatchRunResult:
    """What a run did, for the command line, the scheduler and the job history."""

    run_id: uuid.UUID
    model_version: str
    as_of: datetime
    rows: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    kept_newer: int = 0  # rows not published online: the entity's online score was newer (a stream re-score)


def _model_matrix(chunk: FeatureChunk, model: LoadedModel) -> npt.NDArray[np.float64]:
    missing = [ref for ref in model.feature_refs if ref not in chunk.values]
    if missing:
        raise ConfigurationError(
            f"model {model.version} needs {missing}, which the feature service does not serve"
        )
    return np.column_stack([chunk.values[ref] for ref in model.feature_refs])


def _load_and_copy(
    settings: Settings,
    stores: Stores,
    *,
    run_id: uuid.UUID,
    model: LoadedModel,
    spec: ServiceSpec,
    as_of: datetime,
    timings: dict[str, float],
    progress: Progress | None,
) -> tuple[Collected, tuple[str, ...]]:
    """Stream features, score and COPY every chunk in one transaction; returns what publishing needs."""
    views = tuple(view.name for view in spec.views)
    collected = Collected()
    done = 0
    with (
        psycopg.connect(stores.postgres.url()) as reader,
        psycopg.connect(stores.postgres.url()) as writer,
        writer.transaction(),
        writer.cursor() as cur,
    ):
        cur.execute("DELETE FROM tandem.batch_predictions WHERE run_id = %s", (run_id,))
        columns = ", ".join(COPY_COLUMNS)
        with cur.copy(f"COPY tandem.batch_predictions ({columns}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(COPY_HEADER)
            mark = time.perf_counter()
            for chunk in stream_point_in_time(
                reader, spec, as_of=as_of, chunk_rows=settings.batch_chunk_rows
            ):
                mark = _lap(timings, "features", mark)
                scores = model.predict_scores(_model_matrix(chunk, model))
                codes = snapshot_codes(chunk, views, collected)
                mark = _lap(timings, "score", mark)
                snapshots = [snapshot_json(views, key) for key in collected.snapshots]
                for block in copy_tuples(
                    run_id=run_id,
                    model_version=model.version,
                    scored_at=as_of,
                    entity_ids=chunk.entity_ids,
                    scores=scores,
                    snapshot_codes=codes,
                    snapshots=snapshots,
                ):
                    copy.write(block)
                collected.ids.append(chunk.entity_ids)
                collected.scores.append(scores)
                collected.codes.append(codes)
                done += len(chunk)
                if progress is not None:
                    progress("score", done, None)
                mark = _lap(timings, "copy", mark)
            copy.write(COPY_TRAILER)
        mark = _lap(timings, "copy", mark)
    _lap(timings, "copy", mark)  # the commit
    return collected, views


def _lap(timings: dict[str, float], stage: str, since: float) -> float:
    now = time.perf_counter()
    timings[stage] = timings.get(stage, 0.0) + now - since
    return now


def _publish(
    settings: Settings,
    stores: Stores,
    online: OnlineStore,
    *,
    run_id: uuid.UUID,
    model: LoadedModel,
    view: ViewSpec,
    as_of: datetime,
    collected: Collected,
    views: tuple[str, ...],
    progress: Progress | None,
) -> int:
    """Publish every row online (returns how many were written: newer online scores are kept); on failure
    put back the published scores of the entities whose online row the run replaced."""
    ids = np.concatenate(collected.ids) if collected.ids else view.key.array([])
    strings = np.array([snapshot_json(views, key) for key in collected.snapshots] or [""], dtype=object)
    batch = PublishBatch(
        entity_ids=ids,
        scores=np.concatenate(collected.scores) if collected.scores else np.empty(0),
        model_version=model.version,
        run_id=str(run_id),
        snapshots=strings[np.concatenate(collected.codes)] if collected.codes else strings[:0],
        scored_at=as_of,
    )
    written = 0

    def advance(rows: int) -> None:
        nonlocal written
        written += rows
        if progress is not None:
            progress("publish", written, len(ids))

    try:
        return publish_rows(
            online, view=view, batch=batch, chunk_rows=settings.batch_chunk_rows // 4 or 1, progress=advance
        )
    except BaseException:
        # Every id, not only the acknowledged prefix: a batch in flight may have been applied. Rows the
        # run did not write (or that were replaced since) don't carry its run id and are left alone.
        with psycopg.connect(stores.postgres.url()) as conn:
            restore_previous(
                online,
                conn,
                view=view,
                entity_ids=ids,
                model_name=model.model_name,
                failed_run_id=str(run_id),
            )
        raise


def run_batch_predict(
    settings: Settings,
    stores: Stores,
    *,
    model_name: str,
    as_of: datetime | None = None,
    run_id: uuid.UUID | None = None,
    model_version: str | None = None,
    progress: Progress | None = None,
    online: OnlineStore | None = None,
) -> BatchRunResult:
    """Score every entity of the model's feature service as of `as_of` (default now) with the promoted
    version of `model_name` (or `model_version`), store the scores and publish them as its predictions view.

    Rerunning an existing `run_id` replaces its rows (no duplicates) and reuses its as-of time. `online` is
    the store to publish to (default: one on `stores.redis`, closed at the end). An exception raised by
    `progress` fails the run like any other failure of its stage.
    """
    if as_of is not None and as_of.tzinfo is None:
        raise ConfigurationError("as_of must be timezone-aware (UTC)")
    engine = create_db_engine(stores.postgres, pool_size=1)
    own_store = online is None
    store = online or OnlineStore.connect(stores.redis, project=settings.feast_project, timeout_s=30)
    timings: dict[str, float] = {"features": 0.0, "score": 0.0, "copy": 0.0, "publish": 0.0}
    try:
        with Session(engine) as session, session.begin():
            model = load_model(session, model_name=model_name, version=model_version)
            feature_service = session.scalars(
                select(ModelVersion.feature_service).where(ModelVersion.version == model.version)
            ).one()
            if run_id is not None and as_of is None:
                try:
                    as_of = get_run(session, run_id=run_id).as_of
                except TandemError:
                    as_of = None
            as_of = as_of or datetime.now(UTC)
            run_id = run_id or uuid.uuid4()
            create_run(
                session,
                run_id=run_id,
                model_name=model.model_name,
                model_version=model.version,
                feature_service=feature_service,
                as_of=as_of,
            )
        try:
            spec, view = service_specs(
                settings,
                stores,
                feature_service=feature_service,
                predictions_view=predictions_view_name(model_name),
            )
            collected, views = _load_and_copy(
                settings,
                stores,
                run_id=run_id,
                model=model,
                spec=spec,
                as_of=as_of,
                timings=timings,
                progress=progress,
            )
            rows = sum(len(ids) for ids in collected.ids)
            if rows == 0:
                raise TandemError(
                    f"no entity has features as of {as_of:%Y-%m-%d %H:%M:%S} UTC: nothing to score"
                )
            with Session(engine) as session, session.begin():
                set_run_status(session, run_id=run_id, status="publishing", rows=rows, stage_seconds=timings)
            mark = time.perf_counter()
            written = _publish(
                settings,
                stores,
                store,
                run_id=run_id,
                model=model,
                view=view,
                as_of=as_of,
                collected=collected,
                views=views,
                progress=progress,
            )
            _lap(timings, "publish", mark)
            with Session(engine) as session, session.begin():
                set_run_status(session, run_id=run_id, status="published", stage_seconds=timings)
        except BaseException as exc:
            with Session(engine) as session, session.begin():
                set_run_status(
                    session, run_id=run_id, status="failed", error=first_line(exc), stage_seconds=timings
                )
            raise
        pruned = prune_after_publish(
            engine, model_name=model.model_name
        )  # failure: logged, run stays published
        if pruned.rows or pruned.runs:
            logger.info("pruned %d superseded stream row(s), %d stream run(s)", pruned.rows, pruned.runs)
    finally:
        engine.dispose()
        if own_store:
            store.close()
    return BatchRunResult(
        run_id=run_id,
        model_version=model.version,
        as_of=as_of,
        rows=rows,
        stage_seconds=timings,
        kept_newer=rows - written,
    )
