"""Job-run records on a real PostgreSQL: tracked runs, requests claimed once, dead runs repaired (the
scheduler's retries and requested runs: tests/integration/test_scheduler.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.records.job_runs import (
    JOB_NAMES,
    claim_requested_run,
    finish_job_run,
    forecast_batch_deadline,
    list_job_runs,
    recent_durations,
    request_job_run,
    start_job_run,
)
from core.records.tables import JobRun
from core.records.tracked_run import tracked_run
from core.settings import Settings


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    with engine.connect() as conn:
        transaction = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
            yield session
        transaction.rollback()


@pytest.fixture
def job_name() -> str:
    """A job name no other test uses, so each test sees only its own rows."""
    return f"test_{uuid.uuid4().hex[:8]}"


def _rows(engine: Engine, job: str) -> list[JobRun]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(JobRun).where(JobRun.job == job).order_by(JobRun.id)))


def _delete(engine: Engine, ids: list[int]) -> None:
    with Session(engine) as session, session.begin():
        session.execute(delete(JobRun).where(JobRun.id.in_(ids)))


def test_tracked_run_records_a_success(engine: Engine, job_name: str) -> None:
    """A block that returns leaves one succeeded row with rows, details, duration, host, pid and attempt."""
    with tracked_run(engine, job=job_name, trigger="manual", requested_by="ann") as run:
        running = _rows(engine, job_name)
        run.rows = 42
        run.details["views"] = ["customer_profile"]
    assert [row.status for row in running] == ["running"]  # committed before the block ran
    [row] = _rows(engine, job_name)
    assert row.id == run.run_id
    assert (row.status, row.trigger, row.requested_by, row.rows, row.attempt) == (
        "succeeded",
        "manual",
        "ann",
        42,
        1,
    )
    assert row.details == {"views": ["customer_profile"]}
    assert row.error is None
    assert (row.host, row.pid) == (socket.gethostname(), os.getpid())
    assert row.started_at is not None
    assert row.finished_at is not None
    assert row.finished_at >= row.started_at
    assert row.duration_s == pytest.approx((row.finished_at - row.started_at).total_seconds())


def test_tracked_run_records_a_failure_with_a_one_line_error(engine: Engine, job_name: str) -> None:
    """A block that raises leaves a failed row (never a running one) with the error's first line; it re-raises."""
    with (
        pytest.raises(RuntimeError, match="offline store said no"),
        tracked_run(engine, job=job_name, trigger="schedule", attempt=2),
    ):
        raise RuntimeError("offline store said no\nTraceback-like detail that must not be stored")
    [row] = _rows(engine, job_name)
    assert row.status == "failed"
    assert row.error == "RuntimeError: offline store said no"
    assert row.attempt == 2
    assert row.finished_at is not None


def test_unknown_job_request_is_not_found_naming_the_known_jobs(session: Session) -> None:
    """Requesting a job that does not exist raises NotFoundError naming it and every known job."""
    with pytest.raises(NotFoundError) as caught:
        request_job_run(session, job="retrain_everything", requested_by="api-key-1")
    message = str(caught.value)
    assert "'retrain_everything'" in message
    assert all(name in message for name in JOB_NAMES)


def test_a_request_is_claimed_by_one_session_only(engine: Engine) -> None:
    """Two sessions claiming at once: SKIP LOCKED gives the request to one, the other gets the next or None."""
    with Session(engine) as setup, setup.begin():
        first = request_job_run(setup, job="check_skew", requested_by="alice")
        second = request_job_run(setup, job="check_skew", requested_by="bob")
    try:
        with Session(engine) as one, Session(engine) as two:
            with one.begin(), two.begin():
                claimed_one = claim_requested_run(one, jobs=["check_skew"])
                claimed_two = claim_requested_run(two, jobs=["check_skew"])
                third = claim_requested_run(two, jobs=["check_skew"])
            assert claimed_one is not None
            assert claimed_two is not None
            assert (claimed_one.id, claimed_two.id) == (first, second)  # oldest first; the locked one skipped
            assert third is None
            assert claimed_one.status == "running"
            assert claimed_one.requested_by == "alice"
            assert claimed_one.pid == os.getpid()
        with Session(engine) as after, after.begin():
            assert claim_requested_run(after, jobs=["check_skew"]) is None  # both are running now
            finish_job_run(after, run_id=first, status="succeeded", rows=1)
            finish_job_run(after, run_id=second, status="failed", error="x")
    finally:
        _delete(engine, [first, second])


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(child.stdout)


def test_running_rows_of_dead_processes_on_this_host_are_repaired(engine: Engine, job_name: str) -> None:
    """A later tracked start marks rows of dead pids on this host failed ("process died"), and only those."""
    host = socket.gethostname()
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    stale = {
        "dead pid": JobRun(job=job_name, trigger="schedule", status="running", host=host, pid=_dead_pid()),
        "my pid, before I started": JobRun(
            job=job_name,
            trigger="schedule",
            status="running",
            host=host,
            pid=os.getpid(),
            started_at=long_ago,
        ),
    }
    alive = {
        "live parent": JobRun(
            job=job_name, trigger="schedule", status="running", host=host, pid=os.getppid()
        ),
        "other host": JobRun(job=job_name, trigger="schedule", status="running", host="elsewhere", pid=1),
    }
    with Session(engine, expire_on_commit=False) as session, session.begin():
        for run in (*stale.values(), *alive.values()):
            run.started_at = run.started_at or datetime.now(UTC)
            run.details = {}
            session.add(run)
    with tracked_run(engine, job=job_name, trigger="manual"):
        pass
    by_id = {row.id: row for row in _rows(engine, job_name)}
    for label, run in stale.items():
        assert (by_id[run.id].status, by_id[run.id].error) == ("failed", "process died"), label
        assert by_id[run.id].finished_at is not None, label
    for label, run in alive.items():
        assert by_id[run.id].status == "running", label
    _delete(engine, [run.id for run in alive.values()])


def test_a_run_failed_by_a_repair_stays_failed_when_its_process_finishes_later(
    engine: Engine, job_name: str
) -> None:
    """A process frozen across a repair that later finishes "succeeded" cannot overwrite the repair's
    verdict: the row stays failed ("process died") and the late outcome is kept in details."""
    with Session(engine) as session, session.begin():
        run_id = start_job_run(session, job=job_name, trigger="schedule")
    with Session(engine) as session, session.begin():  # what fail_dead_runs does to a dead owner's row
        run = session.get(JobRun, run_id)
        assert run is not None
        run.status, run.error, run.finished_at = "failed", "process died", datetime.now(UTC)
    with Session(engine) as session, session.begin():
        info = finish_job_run(session, run_id=run_id, status="succeeded", rows=7, details={"stage": "done"})
    assert (info.status, info.error) == ("failed", "process died")
    (row,) = _rows(engine, job_name)
    assert (row.status, row.error, row.rows) == ("failed", "process died", None)
    assert row.details["late_finish"]["status"] == "succeeded"
    assert row.details["stage"] == "done"


def test_history_durations_and_batch_deadline_forecast(session: Session, settings: Settings) -> None:
    """Runs list newest first; durations come from succeeded runs only; the forecast uses their p90."""
    session.execute(delete(JobRun).where(JobRun.job == "batch_predict"))  # other tests' runs; rolled back
    base = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
    for day, (status, minutes) in enumerate(
        [("succeeded", 10), ("failed", 99), ("succeeded", 20), ("succeeded", 30)]
    ):
        run_id = start_job_run(session, job="batch_predict", trigger="schedule")
        run = session.get(JobRun, run_id)
        assert run is not None
        run.started_at = base + timedelta(days=day)
        run.finished_at = run.started_at + timedelta(minutes=minutes)
        run.status, run.duration_s = status, minutes * 60.0
    session.flush()
    assert recent_durations(session, job="batch_predict") == [1800.0, 1200.0, 600.0]
    assert recent_durations(session, job="batch_predict", limit=2) == [1800.0, 1200.0]
    listed = list_job_runs(session, job="batch_predict", limit=3)
    assert [r.duration_s for r in listed] == [1800.0, 1200.0, 5940.0]
    assert all(r.job == "batch_predict" for r in listed)
    tight = settings.model_copy(update={"batch_predict_cron": "0 7 * * *", "batch_deadline_utc": time(7, 25)})
    forecast = forecast_batch_deadline(session, settings=tight, now=datetime(2025, 3, 10, 6, 0, tzinfo=UTC))
    assert forecast.next_start == datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
    assert forecast.samples == 3
    assert forecast.percentile_duration_s == 1800.0
    assert forecast.deadline == datetime(2025, 3, 10, 7, 25, tzinfo=UTC)
    assert forecast.slack_s == -300.0
    assert forecast.late
