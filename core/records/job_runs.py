"""The record of job runs (`tandem.job_runs`): requests, starts, finishes, history and durations.

Functions take the session first, the rest keyword-only, and never commit (the caller owns the
transaction); `core.records.tracked_run` runs a block as a job run, committing its start and finish. Only a
killed process leaves `running` rows: the next tracked run (or the scheduler's leader, periodically) marks
failed, "process died", those whose liveness lock is free (any host: core.records.liveness), and those of
this host without one whose pid is gone.
Statuses: requested -> running -> succeeded | failed (| skipped); each retry attempt is its own row.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.records.deadline import DeadlineForecast, forecast_deadline, next_cron_start
from core.records.liveness import LIVENESS_KEY, lock_is_free
from core.records.tables import JobRun
from core.settings import Settings

__all__ = [
    "FINISHED_STATUSES",
    "JOB_NAMES",
    "PROCESS_DIED",
    "TRIGGERS",
    "JobRunInfo",
    "claim_requested_run",
    "fail_dead_runs",
    "finish_job_run",
    "forecast_batch_deadline",
    "list_job_runs",
    "one_line",
    "pid_alive",
    "recent_durations",
    "request_job_run",
    "start_job_run",
]

JOB_NAMES: tuple[str, ...] = ("materialize", "batch_predict", "check_skew", "push_outbox", "stream_rescore")
TRIGGERS: tuple[str, ...] = ("schedule", "manual", "api")
FINISHED_STATUSES: tuple[str, ...] = ("succeeded", "failed", "skipped")
PROCESS_DIED = "process died"  # the error of a run whose process ended without finishing it
# Rows of this pid started before this moment belong to an earlier process that had the same pid.
_PROCESS_STARTED = datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class JobRunInfo:
    """One row of `tandem.job_runs`, detached from any session."""

    id: int
    job: str
    model_name: str | None
    trigger: str
    status: str
    requested_at: datetime
    requested_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    rows: int | None
    error: str | None
    attempt: int
    host: str | None
    pid: int | None
    details: dict[str, Any]

    @classmethod
    def of(cls, run: JobRun) -> JobRunInfo:
        """A snapshot of an ORM row."""
        values = {name.name: getattr(run, name.name) for name in fields(cls)}
        values["details"] = dict(run.details or {})
        return cls(**values)


def one_line(exc: BaseException, *, limit: int = 500) -> str:
    """`Type: first line of the message`, at most `limit` characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check(value: str, known: tuple[str, ...], what: str) -> None:
    if value not in known:
        raise ValueError(f"unknown {what} {value!r} (known: {', '.join(known)})")


def start_job_run(
    session: Session, *, job: str, trigger: str, attempt: int = 1, requested_by: str | None = None
) -> int:
    """Insert a `running` row for this process and host; returns its id."""
    _check(trigger, TRIGGERS, "trigger")
    run = JobRun(
        job=job,
        trigger=trigger,
        status="running",
        requested_by=requested_by,
        started_at=datetime.now(UTC),
        attempt=attempt,
        host=socket.gethostname(),
        pid=os.getpid(),
        details={},
    )
    session.add(run)
    session.flush()
    return run.id


def finish_job_run(
    session: Session,
    *,
    run_id: int,
    status: str,
    rows: int | None = None,
    error: str | None = None,
    details: dict[str, Any] | None = None,
) -> JobRunInfo:
    """Record the end of a run: status, finished_at, duration_s, rows, error; `details` are merged in (and
    the liveness lock's key dropped: a finished run holds none).

    A run already finished (a repair failed it while its process was frozen) keeps its status and error:
    what the process did after that is noted in `details` (`late_finish`), never recorded as the outcome."""
    _check(status, FINISHED_STATUSES, "final status")
    run = session.get(JobRun, run_id, with_for_update=True)
    if run is None:
        raise NotFoundError(f"job run {run_id} does not exist")
    if run.status in FINISHED_STATUSES:
        late = {"late_finish": {"status": status, "at": datetime.now(UTC).isoformat(), "error": error}}
        merged = {**(run.details or {}), **(details or {}), **late}
        run.details = {key: value for key, value in merged.items() if key != LIVENESS_KEY}
        session.flush()
        return JobRunInfo.of(run)
    run.finished_at = datetime.now(UTC)
    started = run.started_at or run.requested_at
    run.duration_s = max(0.0, (run.finished_at - started).total_seconds())
    run.status, run.rows, run.error = status, rows, error
    merged = {**(run.details or {}), **(details or {})}
    run.details = {key: value for key, value in merged.items() if key != LIVENESS_KEY}  # its lock ends here
    session.flush()
    return JobRunInfo.of(run)


def request_job_run(session: Session, *, job: str, requested_by: str | None) -> int:
    """Record a request to run `job` now (API); the scheduler's leader claims it. NotFoundError if unknown."""
    if job not in JOB_NAMES:
        raise NotFoundError(f"job {job!r} does not exist (known jobs: {', '.join(JOB_NAMES)})")
    run = JobRun(job=job, trigger="api", status="requested", requested_by=requested_by, details={})
    session.add(run)
    session.flush()
    return run.id


def claim_requested_run(session: Session, *, jobs: Collection[str]) -> JobRunInfo | None:
    """Take the oldest request for one of `jobs` (FOR UPDATE SKIP LOCKED) and flip it to running here."""
    query = (
        select(JobRun)
        .where(JobRun.status == "requested", JobRun.job.in_(list(jobs)))
        .order_by(JobRun.requested_at, JobRun.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    run = session.scalars(query).first()
    if run is None:
        return None
    run.status, run.started_at = "running", datetime.now(UTC)
    run.host, run.pid = socket.gethostname(), os.getpid()
    session.flush()
    return JobRunInfo.of(run)


def list_job_runs(
    session: Session, *, job: str | None = None, model_name: str | None = None, limit: int = 50
) -> list[JobRunInfo]:
    """The newest runs first (by start, or request time for runs not started yet); with `model_name`, the
    runs for that model (its own, or per-model jobs whose details list it under `models`)."""
    query = select(JobRun).order_by(
        func.coalesce(JobRun.started_at, JobRun.requested_at).desc(), JobRun.id.desc()
    )
    if job is not None:
        query = query.where(JobRun.job == job)
    if model_name is not None:
        query = query.where(
            or_(JobRun.model_name == model_name, JobRun.details["models"].has_key(model_name))
        )
    return [JobRunInfo.of(run) for run in session.scalars(query.limit(limit))]


def recent_durations(session: Session, *, job: str, limit: int = 30) -> list[float]:
    """Durations (s) of the newest `limit` succeeded runs of `job`, newest first."""
    query = (
        select(JobRun.duration_s)
        .where(JobRun.job == job, JobRun.status == "succeeded", JobRun.duration_s.is_not(None))
        .order_by(JobRun.finished_at.desc())
        .limit(limit)
    )
    return [float(value) for value in session.scalars(query) if value is not None]


def pid_alive(pid: int) -> bool:
    """True while process `pid` of this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # Linux: a zombie (dead, not yet reaped by its parent) is dead
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _liveness_lock(run: JobRun) -> int | None:
    key = (run.details or {}).get(LIVENESS_KEY)
    return key if isinstance(key, int) and not isinstance(key, bool) else None


def fail_dead_runs(session: Session, *, host: str | None = None) -> list[int]:
    """Mark `running` rows of dead processes `failed` ("process died"); returns their ids.

    A row whose liveness lock (core.records.liveness) no session holds is dead, whatever its host; a row of
    this host without one (started before liveness locks, or not yet noted) is dead when its pid is gone.
    """
    host = host or socket.gethostname()
    query = (
        select(JobRun)
        .where(JobRun.status == "running", or_(JobRun.host == host, JobRun.details.has_key(LIVENESS_KEY)))
        .with_for_update(skip_locked=True)
    )
    repaired: list[int] = []
    now = datetime.now(UTC)
    for run in session.scalars(query):
        key = _liveness_lock(run)
        mine_before = run.pid == os.getpid() and (run.started_at or now) < _PROCESS_STARTED
        local_dead = run.host == host and (
            run.pid is None or mine_before or (run.pid != os.getpid() and not pid_alive(run.pid))
        )
        if (key is not None and lock_is_free(session, key)) or (key is None and local_dead):
            run.status, run.error, run.finished_at = "failed", PROCESS_DIED, now
            run.duration_s = max(0.0, (now - (run.started_at or run.requested_at)).total_seconds())
            repaired.append(run.id)
    session.flush()
    return repaired


def forecast_batch_deadline(
    session: Session, *, settings: Settings, now: datetime | None = None
) -> DeadlineForecast:
    """The batch_predict deadline forecast from its recent succeeded runs and the cron in settings."""
    moment = now or datetime.now(UTC)
    return forecast_deadline(
        recent_durations(session, job="batch_predict"),
        next_start=next_cron_start(settings.batch_predict_cron, now=moment),
        deadline_time=settings.batch_deadline_utc,
        percentile=settings.deadline_percentile,
    )
