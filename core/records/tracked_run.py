"""A block of work recorded as one job run in `tandem.job_runs`: `with tracked_run(engine, job=...) as run:`.

By design the start and the finish are each committed on their own (not in the caller's transaction), so a
failed run leaves a `failed` row, never a `running` one; starting a run first marks the `running` rows of
dead processes failed (`core.records.job_runs.fail_dead_runs`), and the run holds a liveness lock while it
runs, so a repair on any machine can tell when its process is gone (`core.records.liveness`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from core.errors import ConfigurationError, TandemError
from core.metrics import JOB_DURATION, JOB_RUNS
from core.records.job_runs import JobRunInfo, fail_dead_runs, finish_job_run, one_line, start_job_run
from core.records.liveness import LIVENESS_KEY, LIVENESS_S, Liveness
from core.records.tables import JobRun

__all__ = ["Fence", "RunHandle", "tracked_run"]


@dataclass(slots=True)
class RunHandle:
    """What a tracked job may fill in while it runs: rows and free-form details (JSON)."""

    run_id: int
    job: str
    attempt: int
    rows: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _begin(
    engine: Engine,
    *,
    job: str,
    trigger: str,
    attempt: int,
    requested_by: str | None,
    run_id: int | None,
    lock: int,
) -> int:
    try:
        with Session(engine) as session, session.begin():
            fail_dead_runs(session)
            if run_id is None:
                run_id = start_job_run(
                    session, job=job, trigger=trigger, attempt=attempt, requested_by=requested_by
                )
            run = session.get(JobRun, run_id, with_for_update=True)
            if run is not None:  # the lock is held already: the row is never seen without a live owner
                run.details = {**(run.details or {}), LIVENESS_KEY: lock}
            return run_id
    except ProgrammingError as exc:
        if "job_runs" in str(exc.orig):
            raise ConfigurationError("table tandem.job_runs is missing: run `tandem apply` first") from None
        raise


Fence = Callable[[Session], str | None]
"""Checked in the transaction that records a success: a reason (not None) records the run failed instead."""


def _end(
    engine: Engine, handle: RunHandle, status: str, error: str | None, fence: Fence | None = None
) -> JobRunInfo:
    with Session(engine) as session, session.begin():
        if status == "succeeded" and fence is not None and (reason := fence(session)) is not None:
            status, error = "failed", reason
        info = finish_job_run(
            session,
            run_id=handle.run_id,
            status=status,
            rows=handle.rows,
            error=error,
            details=handle.details,
        )
    JOB_RUNS.labels(handle.job, status).inc()
    if info.duration_s is not None:
        JOB_DURATION.labels(handle.job).observe(info.duration_s)
    return info


@contextmanager
def tracked_run(
    engine: Engine,
    *,
    job: str,
    trigger: str,
    attempt: int = 1,
    requested_by: str | None = None,
    run_id: int | None = None,
    fence: Fence | None = None,
    liveness_s: float = LIVENESS_S,
) -> Iterator[RunHandle]:
    """Run a block as one job run: start and finish each committed on their own (see module docstring).

    Pass `run_id` of a claimed request to finish that row instead of starting a new one. `fence` is asked
    in the transaction that would record a success: when it gives a reason, the run is recorded failed
    with it and TandemError(reason) is raised (the scheduler's leader lease: scheduler.leader). While it
    runs, the process holds a liveness lock (core.records.liveness) that repairs on any host can test:
    gone within `liveness_s` after the process or its machine.
    """
    libpq_url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    liveness = Liveness(libpq_url, liveness_s=liveness_s)
    try:
        run_id = _begin(
            engine, job=job, trigger=trigger, attempt=attempt, requested_by=requested_by, run_id=run_id,
            lock=liveness.key,
        )  # fmt: skip
        handle = RunHandle(run_id=run_id, job=job, attempt=attempt)
        try:
            yield handle
        except BaseException as exc:  # recorded, then re-raised: interrupts and exits fail the run too
            _end(engine, handle, "failed", one_line(exc))
            raise
        info = _end(engine, handle, "succeeded", None, fence)
    finally:
        liveness.release()
    if info.status != "succeeded":
        raise TandemError(info.error or "the run's fence refused its success")
