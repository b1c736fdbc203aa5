"""The life of a prediction run in `tandem.prediction_runs`: a nightly `batch` run, or a `stream` re-score.

running -> loaded (every row durably in PostgreSQL) -> publishing -> published (every row online).
Any failure -> failed, with the error. Only published runs are visible to Feast (the batch_predictions
source joins on status) and to the service. Functions take the session first; callers own transactions.

A run whose process is killed stays unfinished (running, loaded or publishing) until repaired: the job
run that starts it (the scheduler's batch_predict job, or `tandem batch-predict`) notes it as its own first
(`record_owner`: the prediction run id in the job run's details under "prediction_runs"), and once that job
run is marked "process died" (core.records.job_runs: `fail_dead_runs`, by its liveness lock from any host
or by its pid on its own), `fail_orphaned_runs` marks the prediction run failed too, naming the dead
process. The previous published run stays served throughout. Runs started outside a job run (a direct
call of run_batch_predict) have no owner and are never repaired this way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import Text, cast, insert, select, update
from sqlalchemy.orm import Session

from core.errors import NotFoundError, TandemError
from core.records.job_runs import PROCESS_DIED
from core.records.tables import JobRun, PredictionRun

__all__ = [
    "OWNED_RUNS_KEY",
    "RUN_KINDS",
    "UNFINISHED_STATUSES",
    "RunInfo",
    "RunKind",
    "create_run",
    "fail_orphaned_runs",
    "get_run",
    "insert_run",
    "latest_published_run",
    "list_runs",
    "record_owner",
    "set_run_status",
]

OWNED_RUNS_KEY = "prediction_runs"  # in job_runs.details: ids of the prediction runs that job run started
UNFINISHED_STATUSES: tuple[str, ...] = ("running", "loaded", "publishing")

RunKind = Literal["batch", "stream"]
"""`batch`: every entity, point-in-time as of the run's as-of time; `stream`: entities whose online features
moved past their stored score, re-scored on them (core.rescore)."""
RUN_KINDS: tuple[RunKind, ...] = get_args(RunKind)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A prediction run as people and the service see it."""

    run_id: uuid.UUID
    model_name: str
    model_version: str
    feature_service: str
    as_of: datetime
    status: str
    started_at: datetime
    finished_at: datetime | None
    published_at: datetime | None
    rows: int
    error: str | None
    stage_seconds: dict[str, Any]
    kind: RunKind = "batch"

    @classmethod
    def of(cls, row: PredictionRun) -> RunInfo:
        """Copy an ORM row into a detached value."""
        return cls(
            run_id=row.run_id,
            model_name=row.model_name,
            model_version=row.model_version,
            feature_service=row.feature_service,
            as_of=row.as_of,
            status=row.status,
            started_at=row.started_at,
            finished_at=row.finished_at,
            published_at=row.published_at,
            rows=row.rows,
            error=row.error,
            stage_seconds=dict(row.stage_seconds or {}),
            kind="stream" if row.kind == "stream" else "batch",
        )


def create_run(
    session: Session,
    *,
    run_id: uuid.UUID,
    model_name: str,
    model_version: str,
    feature_service: str,
    as_of: datetime,
    kind: RunKind = "batch",
) -> RunInfo:
    """Insert a run of `kind` in state `running`; an existing run id is reset to `running` (a rerun)."""
    row = session.get(PredictionRun, run_id)
    if row is None:
        row = PredictionRun(
            run_id=run_id,
            model_name=model_name,
            model_version=model_version,
            feature_service=feature_service,
            as_of=as_of,
            status="running",
            rows=0,
            stage_seconds={},
            kind=kind,
        )
        session.add(row)
    else:
        row.status, row.error, row.finished_at, row.published_at = "running", None, None, None
        row.model_name, row.model_version, row.feature_service = model_name, model_version, feature_service
    row.started_at = datetime.now(UTC)
    session.flush()
    return RunInfo.of(row)


def insert_run(
    session: Session,
    *,
    run_id: uuid.UUID,
    model_name: str,
    model_version: str,
    feature_service: str,
    as_of: datetime,
    kind: RunKind,
    status: str,
    rows: int,
) -> None:
    """Insert a run of a new id (a stream re-score's) straight in `status` with `rows`: one statement, where
    `create_run` then `set_run_status` take three."""
    session.execute(
        insert(PredictionRun).values(
            run_id=run_id,
            model_name=model_name,
            model_version=model_version,
            feature_service=feature_service,
            as_of=as_of,
            status=status,
            rows=rows,
            started_at=datetime.now(UTC),
            stage_seconds={},
            kind=kind,
        )
    )


def get_run(session: Session, *, run_id: uuid.UUID) -> RunInfo:
    """The run, or NotFoundError naming it."""
    row = session.get(PredictionRun, run_id)
    if row is None:
        raise NotFoundError(f"prediction run {run_id} does not exist")
    return RunInfo.of(row)


def set_run_status(
    session: Session,
    *,
    run_id: uuid.UUID,
    status: str,
    rows: int | None = None,
    error: str | None = None,
    stage_seconds: dict[str, float] | None = None,
) -> None:
    """Move a run to `status`, stamping finished/published times as the state implies.

    Only a `publishing` run becomes `published` (TandemError otherwise): a run that a repair marked failed,
    its process having lost its liveness lock, stays failed even if that process comes back and finishes.
    """
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": status}
    if rows is not None:
        values["rows"] = rows
    if error is not None:
        values["error"] = error[:2000]
    if stage_seconds is not None:
        values["stage_seconds"] = stage_seconds
    if status in {"published", "failed"}:
        values["finished_at"] = now
    query = update(PredictionRun).where(PredictionRun.run_id == run_id)
    if status == "published":
        values["published_at"] = now
        query = query.where(PredictionRun.status == "publishing")  # not one a repair failed meanwhile
    if session.execute(query.values(**values)).rowcount == 0 and status == "published":  # type: ignore[attr-defined]
        current = session.scalar(select(PredictionRun.status).where(PredictionRun.run_id == run_id))
        raise TandemError(
            f"prediction run {run_id} is {current or 'missing'}, not publishing: it cannot be published "
            "(a repair marked it failed while this process was stopped or cut off from PostgreSQL)"
        )


def latest_published_run(
    session: Session,
    *,
    model_name: str | None = None,
    feature_service: str | None = None,
    kind: RunKind | None = None,
) -> RunInfo | None:
    """The newest published run (of a model, of a feature service, of a kind). Stream runs re-score a few
    entities each: the online store serves, per entity, the newest score of every published run."""
    query = select(PredictionRun).where(PredictionRun.status == "published")
    if kind is not None:
        query = query.where(PredictionRun.kind == kind)
    if model_name is not None:
        query = query.where(PredictionRun.model_name == model_name)
    if feature_service is not None:
        query = query.where(PredictionRun.feature_service == feature_service)
    row = session.scalars(query.order_by(PredictionRun.published_at.desc()).limit(1)).first()
    return RunInfo.of(row) if row is not None else None


def list_runs(session: Session, *, limit: int = 20) -> list[RunInfo]:
    """Newest runs first."""
    rows = session.scalars(select(PredictionRun).order_by(PredictionRun.started_at.desc()).limit(limit))
    return [RunInfo.of(row) for row in rows]


def record_owner(session: Session, *, job_run_id: int, run_id: uuid.UUID) -> None:
    """Note that job run `job_run_id` (its process) runs prediction run `run_id`; NotFoundError if unknown."""
    job_run = session.get(JobRun, job_run_id, with_for_update=True)
    if job_run is None:
        raise NotFoundError(f"job run {job_run_id} does not exist")
    details = dict(job_run.details or {})
    details[OWNED_RUNS_KEY] = [*details.get(OWNED_RUNS_KEY, []), str(run_id)]
    job_run.details = details
    session.flush()


def fail_orphaned_runs(session: Session) -> list[uuid.UUID]:
    """Mark failed the unfinished runs whose owning job run died ("process died"); returns their ids."""
    query = (
        select(PredictionRun, JobRun)
        .join(JobRun, JobRun.details[OWNED_RUNS_KEY].has_key(cast(PredictionRun.run_id, Text)))
        .where(
            PredictionRun.status.in_(UNFINISHED_STATUSES),
            JobRun.status == "failed",
            JobRun.error == PROCESS_DIED,
        )
        .with_for_update(of=PredictionRun, skip_locked=True)
    )
    now = datetime.now(UTC)
    repaired: list[uuid.UUID] = []
    for run, owner in session.execute(query):
        run.error = (
            f"the process running it died while {run.status} (job run {owner.id}, pid {owner.pid} on "
            f"{owner.host}); the previous published run stays served"
        )
        run.status, run.finished_at = "failed", now
        repaired.append(run.run_id)
    session.flush()
    return repaired
