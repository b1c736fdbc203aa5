"""The leader lease on the real PostgreSQL: one holder, takeover only after expiry, a lapsed holder knows
at once; and the next leader marks failed the prediction runs a dead process left unfinished, leaving
those of live processes alone while the previous published run stays served."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from core.errors import ConfigurationError, TandemError
from core.records.job_runs import PROCESS_DIED
from core.records.prediction_runs import OWNED_RUNS_KEY, latest_published_run
from core.records.tables import JobRun, ModelVersion, PredictionRun
from core.records.tracked_run import RunHandle
from core.settings import Settings
from core.stores.resolve import Stores
from scheduler.job_runner import JobRunner
from scheduler.leader import LeaderLease, current_holder
from scheduler.registry import Job, JobContext, JobRegistry, RetryPolicy
from scheduler.runner import run_scheduler


def _holder(stores: Stores) -> tuple[str, bool] | None:
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        holder = current_holder(conn)
    return None if holder is None else (holder.holder, holder.unexpired)


def test_one_holder_and_a_takeover_only_after_the_lease_expires(stores: Stores) -> None:
    """Of two leases on one database only one is taken; the standby cannot take it while it is renewed;
    once renewals stop it takes it within lease + poll; the old holder's `leading()` and `renew()` are
    then False, and the takeover's epoch is one more."""
    with (
        LeaderLease(stores.postgres, lease_s=1.0, poll_s=0.2) as first,
        LeaderLease(stores.postgres, lease_s=1.0, poll_s=0.2) as second,
    ):
        assert first.try_acquire()
        assert first.leading()
        assert not second.try_acquire()
        for _ in range(4):  # 1.2 s of renewals: longer than one lease, still held
            time.sleep(0.3)
            assert first.renew()
            assert not second.try_acquire()
        assert _holder(stores) == (first.holder, True)
        stopped = time.monotonic()
        while not second.try_acquire():
            assert time.monotonic() - stopped < 3.0, "no takeover within 3 leases"
            time.sleep(0.05)
        takeover_s = time.monotonic() - stopped
        assert 0.5 <= takeover_s < 1.5, takeover_s
        assert not first.leading()
        assert not first.renew()
        assert first.epoch is not None
        assert second.epoch == first.epoch + 1
        assert _holder(stores) == (second.holder, True)


def test_release_lets_a_standby_lead_at_once(stores: Stores) -> None:
    """A released lease is expired at once: a standby's next try takes it, long before the lease's end."""
    with LeaderLease(stores.postgres, lease_s=30.0, poll_s=1.0) as first:
        assert first.try_acquire()
        first.release()
        assert not first.leading()
        with LeaderLease(stores.postgres, lease_s=30.0, poll_s=1.0) as second:
            assert second.try_acquire()


def _hold_for(stores: Stores, *, pid: int, seconds: float) -> str:
    """Make the lease held for `seconds` by a process `pid` of this host; returns the holder."""
    holder = f"{socket.gethostname()}:{pid}:test"
    with LeaderLease(stores.postgres, lease_s=1.0, poll_s=0.5) as lease:
        assert _until_taken(lease)
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute(
            "UPDATE tandem_scheduler.leader_lease SET holder = %s, pid = %s, "
            "expires_at = now() + make_interval(secs => %s)",
            (holder, pid, seconds),
        )
    return holder


def _until_taken(lease: LeaderLease) -> bool:
    deadline = time.monotonic() + 5
    while not lease.try_acquire():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_lease_of_a_dead_process_of_this_host_is_taken_at_once(
    stores: Stores, live_process: subprocess.Popen[bytes]
) -> None:
    """A lease held for another minute by a pid that no longer exists on this host is taken at the first
    try (epoch + 1); one held by a live process of this host is not."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    _hold_for(stores, pid=dead.pid, seconds=60)
    with LeaderLease(stores.postgres, lease_s=5.0, poll_s=1.0) as lease:
        assert lease.try_acquire()
        assert _holder(stores) == (lease.holder, True)
    alive = _hold_for(stores, pid=live_process.pid, seconds=60)
    try:
        with LeaderLease(stores.postgres, lease_s=5.0, poll_s=1.0) as lease:
            assert not lease.try_acquire()
            assert _holder(stores) == (alive, True)
    finally:
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            conn.execute("UPDATE tandem_scheduler.leader_lease SET expires_at = now()")


def test_a_job_run_succeeds_only_while_its_leader_holds_the_lease(
    settings: Settings, stores: Stores, engine: Engine
) -> None:
    """With the lease's fence, a run is recorded succeeded while this process holds the lease; once
    another holder took it, the same run is recorded failed with the reason, and the error raised."""
    name = f"test_{uuid.uuid4().hex[:8]}"
    job = Job(
        name=name,
        body=_one_row,
        trigger=IntervalTrigger(hours=1, timezone=UTC),
        misfire_grace_s=60,
        retry=RetryPolicy(max_attempts=1, backoff_s=0.1),
    )
    context = JobContext(settings=settings, stores=stores, engine=engine)
    with LeaderLease(stores.postgres, lease_s=30.0, poll_s=1.0) as lease:
        assert _until_taken(lease)
        runner = JobRunner(JobRegistry([job]), context, fence=lease.fence)
        assert runner.run(name, trigger="schedule") == 1
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            conn.execute("UPDATE tandem_scheduler.leader_lease SET holder = 'another-scheduler'")
        with pytest.raises(TandemError, match="leader lease lost before the run finished"):
            runner.run(name, trigger="schedule")
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            conn.execute("UPDATE tandem_scheduler.leader_lease SET expires_at = now()")
    with Session(engine) as session:
        runs = list(session.scalars(select(JobRun).where(JobRun.job == name).order_by(JobRun.id)))
    assert [(run.status, run.rows) for run in runs] == [("succeeded", 1), ("failed", 1)]
    assert (runs[1].error or "").startswith("leader lease lost before the run finished")


def test_a_lease_no_longer_than_its_poll_is_refused(stores: Stores) -> None:
    """leader_lease_s must exceed leader_poll_s, or the leader would renew too late."""
    with pytest.raises(ConfigurationError, match="leader_lease_s"):
        LeaderLease(stores.postgres, lease_s=2.0, poll_s=2.0)


def _model_version(session: Session, model_name: str) -> str:
    version = f"{model_name}-v1"
    now = datetime.now(UTC)
    session.add(
        ModelVersion(
            version=version,
            model_name=model_name,
            artifact=b"-",
            artifact_sha256=hashlib.sha256(b"-").hexdigest(),
            feature_service="fs",
            feature_refs=[],
            training_start=now - timedelta(days=1),
            training_end=now,
        )
    )
    session.flush()
    return version


def _prediction_run(session: Session, *, model_name: str, version: str, status: str) -> uuid.UUID:
    run_id = uuid.uuid4()
    now = datetime.now(UTC)
    session.add(
        PredictionRun(
            run_id=run_id,
            model_name=model_name,
            model_version=version,
            feature_service="fs",
            as_of=now,
            status=status,
            rows=3,
            stage_seconds={},
            published_at=now - timedelta(hours=1) if status == "published" else None,
        )
    )
    return run_id


def _owner(session: Session, *, pid: int, run_id: uuid.UUID) -> int:
    job_run = JobRun(
        job="batch_predict",
        trigger="schedule",
        status="running",
        started_at=datetime.now(UTC),
        attempt=1,
        host=socket.gethostname(),
        pid=pid,
        details={OWNED_RUNS_KEY: [str(run_id)]},
    )
    session.add(job_run)
    session.flush()
    return job_run.id


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process of this test that stays alive (killed by its pid afterwards)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait(timeout=10)


def _one_row(_ctx: JobContext, run: RunHandle) -> None:
    run.rows = 1


def _idle(_ctx: JobContext, _run: RunHandle) -> None:
    """A job body that never runs during the test (hourly trigger)."""


def test_the_next_leader_fails_runs_left_publishing_by_a_dead_process(
    settings: Settings, stores: Stores, engine: Engine, live_process: subprocess.Popen[bytes]
) -> None:
    """A run left `publishing` by a batch job whose process died is marked failed, with a reason naming the
    process, as soon as a scheduler leads; one of a live process stays `publishing`; the previous
    published run stays the one served."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)  # exited and reaped: no process has its pid any more
    model_name = f"lease_{uuid.uuid4().hex[:8]}"
    with Session(engine) as session, session.begin():
        version = _model_version(session, model_name)
        served = _prediction_run(session, model_name=model_name, version=version, status="published")
        orphan = _prediction_run(session, model_name=model_name, version=version, status="publishing")
        alive = _prediction_run(session, model_name=model_name, version=version, status="publishing")
        session.flush()
        dead_job = _owner(session, pid=dead.pid, run_id=orphan)
        live_job = _owner(session, pid=live_process.pid, run_id=alive)

    scoped = settings.model_copy(update={"leader_lease_s": 2.0, "leader_poll_s": 0.5})
    idle = Job(
        name=f"test_{uuid.uuid4().hex[:8]}",
        body=_idle,
        trigger=IntervalTrigger(hours=1, timezone=UTC),
        misfire_grace_s=60,
        retry=RetryPolicy(max_attempts=1, backoff_s=0.1),
    )
    stop, said = threading.Event(), list[str]()
    codes: list[int] = []
    leader = threading.Thread(
        target=lambda: codes.append(
            run_scheduler(scoped, stores, registry=JobRegistry([idle]), stop=stop, notify=said.append)
        )
    )
    leader.start()
    try:
        deadline = time.monotonic() + 20
        while not any(line.startswith("marked failed") for line in said) and leader.is_alive():
            assert time.monotonic() < deadline, said
            time.sleep(0.1)
    finally:
        stop.set()
        leader.join(timeout=20)
    assert codes == [0], said
    try:
        with Session(engine) as session:
            runs = {row.run_id: row for row in session.scalars(select(PredictionRun))}
            jobs = {row.id: row for row in session.scalars(select(JobRun))}
            assert runs[orphan].status == "failed"
            assert runs[orphan].finished_at is not None
            assert f"pid {dead.pid}" in (runs[orphan].error or "")
            assert "died while publishing" in (runs[orphan].error or "")
            assert (jobs[dead_job].status, jobs[dead_job].error) == ("failed", PROCESS_DIED)
            assert runs[alive].status == "publishing"
            assert jobs[live_job].status == "running"
            published = latest_published_run(session, model_name=model_name)
            assert published is not None
            assert published.run_id == served
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(JobRun).where(JobRun.id.in_([dead_job, live_job])))
            session.execute(delete(PredictionRun).where(PredictionRun.model_name == model_name))
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == model_name))
